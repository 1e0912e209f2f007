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
	return addManSections(man)
}

// manEnvironment and manExitStatus are the ENVIRONMENT and EXIT STATUS
// sections of every page, in roff.
const manEnvironment = `.SH ENVIRONMENT
.TP
.B UCX_FAULT_SOCKET_DIR
Directory of the control sockets (default: the user's private $XDG_RUNTIME_DIR/ucxfault, else /tmp/ucxfault-UID); --socket-dir overrides it.
.TP
.B UCXFAULT_LIB
Path of libucxfault.so for inject, when --lib is not given.
.TP
.B UCX_FAULT_SUMMARY_FILE
A file each injected process appends its exit summary line to (faults, calls, seed, strategy, mode, rules).
.TP
.B UCX_FAULT_EXIT_SUMMARY
When 1, each injected process writes its exit summary line on stderr (inject sets it unless --quiet).
.TP
.B UCX_FAULT_IPC_BACKEND
socket (default) or file: how the CLI reaches the injected processes.
.TP
.B UCX_FAULT_ENABLED, UCX_FAULT_STRATEGY, UCX_FAULT_PROBABILITY, UCX_FAULT_PATTERN, UCX_FAULT_ERROR_CODES, UCX_FAULT_HOOKS, UCX_FAULT_SEED, UCX_FAULT_MODE, UCX_FAULT_RECORD, UCX_FAULT_RULES
The injector's start-up settings, which inject writes from its flags (README.md, "Environment").
.TP
.B COLUMNS
The width tables are fitted to; by default the terminal's, and no limit when the output is not a terminal.
`

const manExitStatus = `.SH EXIT STATUS
.TP
.B 0
Success; for a listing with -o json, also when no process was found (the answer is []).
.TP
.B 1
The command could not do its job: a process did not answer or refused, none was found, a file could not be written.
.TP
.B 2
Bad input (a usage error: unknown command or flag, a bad value); nothing was sent.
.PP
inject exits with the status of the program it ran.
`

// addManSections adds ENVIRONMENT and EXIT STATUS to every page in dir,
// before SEE ALSO (cobra's generator has no place for them).
func addManSections(dir string) error {
	pages, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return fmt.Errorf("listing man pages: %w", err)
	}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		text := string(b)
		add := manEnvironment + manExitStatus
		if i := strings.Index(text, ".SH SEE ALSO"); i >= 0 {
			text = text[:i] + add + text[i:]
		} else {
			text += add
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
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
