package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// newGenDocsCmd is the hidden `gen-docs DIR` command that `make dist` runs:
// it writes the man pages and the shell completions of the command tree.
func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gen-docs DIR",
		Short: "Write man pages (DIR/man/man1) and bash, zsh and fish completions (DIR/completions)",
		Long: `Writes one man page per command into DIR/man/man1 and the completion
scripts DIR/completions/ucxfault.bash, DIR/completions/_ucxfault (zsh) and
DIR/completions/ucxfault.fish. The pages are dated SOURCE_DATE_EPOCH when it
is set, so that a release build is reproducible.`,
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return genDocs(c.Root(), args[0])
		},
	}
}

// genDocs writes the man pages and completions of root under dir.
func genDocs(root *cobra.Command, dir string) error {
	// The default shown for --socket-dir is read from the environment of
	// whoever runs the command; the pages show the built-in one (none: the
	// user's private directory, named in the flag's text).
	if f := root.PersistentFlags().Lookup("socket-dir"); f != nil {
		f.DefValue = ""
	}
	root.DisableAutoGenTag = true
	man := filepath.Join(dir, "man", "man1")
	comp := filepath.Join(dir, "completions")
	for _, d := range []string{man, comp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	for _, w := range []struct {
		name string
		gen  func(string) error
	}{
		{"ucxfault.bash", func(p string) error { return root.GenBashCompletionFileV2(p, true) }},
		{"_ucxfault", root.GenZshCompletionFile},
		{"ucxfault.fish", func(p string) error { return root.GenFishCompletionFile(p, true) }},
	} {
		if err := w.gen(filepath.Join(comp, w.name)); err != nil {
			return fmt.Errorf("writing %s completion: %w", w.name, err)
		}
	}
	// Last: escaping changes the descriptions the completions show.
	escapeMarkdown(root)
	header := &doc.GenManHeader{Title: "UCXFAULT", Section: "1", Source: "ucxfault", Manual: "ucxfault manual"}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("writing man pages: %w", err)
	}
	return nil
}

// markdownSpecial escapes what the man page generator would read as
// emphasis: it renders its input as Markdown, so UCX_FAULT_SEED would lose its
// underscores and UCX_FAULT_* would start an italic run.
var markdownSpecial = strings.NewReplacer("_", `\_`, "*", `\*`)

// escapeMarkdown escapes the prose of every command and flag below c. It
// changes the commands for good: gen-docs is the only command that runs it.
// Examples are left alone: they are printed as code blocks.
func escapeMarkdown(c *cobra.Command) {
	c.Short = markdownSpecial.Replace(c.Short)
	c.Long = markdownSpecial.Replace(c.Long)
	escape := func(f *pflag.Flag) { f.Usage = markdownSpecial.Replace(f.Usage) }
	c.LocalFlags().VisitAll(escape)
	for _, sub := range c.Commands() {
		escapeMarkdown(sub)
	}
}
