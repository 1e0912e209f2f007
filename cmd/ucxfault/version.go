package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/internal/version"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this ucxfault (status shows each injector's)",
		Long: `Prints the CLI's version. Each injected process reports its injector's
version in status (-o wide, and a line under the table when it differs
from the CLI's), so that a CLI and an injector of different builds are told
apart.`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			if format == formatJSON {
				return writeJSON(c.OutOrStdout(), map[string]string{"version": version.String(), "go": runtime.Version()})
			}
			fmt.Fprintf(c.OutOrStdout(), "ucxfault %s (%s)\n", version.String(), runtime.Version())
			return nil
		},
	}
}
