package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/pkg/twwidth"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Output formats of -o/--output: the same three for every command.
const (
	formatTable = "table" // for a person: the narrow columns, fitted to the terminal
	formatWide  = "wide"  // the table with every column (seeds, codes, versions)
	formatJSON  = "json"  // for a script: one JSON document on stdout
)

var formats = []string{formatTable, formatWide, formatJSON}

func isFormat(s string) bool {
	for _, f := range formats {
		if s == f {
			return true
		}
	}
	return false
}

// outputFormat returns the format -o asked for, or a usage error.
func outputFormat() (string, error) {
	if !isFormat(global.output) {
		return "", usagef("-o %q: -o chooses the output format (accepted: %s)", global.output, strings.Join(formats, ", "))
	}
	return global.output, nil
}

// legacyFileOutput is for the commands whose -o used to name a file
// (record-dump, observe): a value that is not a format is still taken as
// the file, with a notice on stderr, so that scripts written for the old
// spelling keep working. It returns the format and the file (file flag
// first).
func legacyFileOutput(c *cobra.Command, fileFlag string) (format, file string, err error) {
	file = fileFlag
	if isFormat(global.output) {
		return global.output, file, nil
	}
	if file != "" {
		return "", "", usagef("-o %q: -o chooses the output format (accepted: %s); the file is --file", global.output, strings.Join(formats, ", "))
	}
	fmt.Fprintf(c.ErrOrStderr(), "ucxfault: -o FILE is deprecated for %s: use --file %s (-o now chooses the output format: %s)\n",
		c.CommandPath()[len("ucxfault "):], global.output, strings.Join(formats, ", "))
	return formatTable, global.output, nil
}

// writeJSON writes v as indented JSON. Callers pass empty slices, not nil
// ones, so that nothing found is [] rather than null.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing JSON: %w", err)
	}
	return nil
}

// terminalWidth is the width tables are fitted to: COLUMNS when set (as
// shells export it, and as tests set it), else the width of the terminal w
// writes to, else 0: no limit, so that a pipe or a file gets whole cells.
func terminalWidth(w io.Writer) int {
	if v := os.Getenv("COLUMNS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n
		}
	}
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 0
}

// column describes one column of a table.
type column struct {
	Name string
	// Wide columns are shown only with -o wide.
	Wide bool
	// Shrink is the order in which columns are shortened to fit the
	// terminal (1 first); 0 never shortens the column.
	Shrink int
	// Min is the least width a shortened column keeps (default 8).
	Min int
	// Wrap breaks a shortened column's cells over several lines at spaces
	// (a rule's tokens, faults by code) instead of cutting them.
	Wrap bool
	// HideEmpty leaves the column out of the narrow table when no row has
	// anything in it ("", "-" or "off" in every cell): a rank column for
	// processes without ranks says nothing.
	HideEmpty bool
}

// table is a table of text cells that fits the terminal: build it with
// newTable and add, then render. It is generic: any command's table
// (status, stats, rules, endpoints) goes through it.
type table struct {
	cols []column
	rows [][]string
}

func newTable(cols ...column) *table { return &table{cols: cols} }

// add appends a row; it must have one cell per column, wide ones included.
func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// len is the number of rows.
func (t *table) len() int { return len(t.rows) }

// render writes the table, with the wide columns when wide is set, its
// shrinkable columns shortened (cells cut with "...") so that it fits in
// width columns of the terminal (0: no limit).
func (t *table) render(w io.Writer, width int, wide bool) error {
	var keep []int
	for i, c := range t.cols {
		if wide || (!c.Wide && !(c.HideEmpty && t.empty(i))) {
			keep = append(keep, i)
		}
	}
	widths := make([]int, len(keep))
	for k, i := range keep {
		// The header is rendered in upper case, same width.
		widths[k] = twwidth.Width(t.cols[i].Name)
		for _, r := range t.rows {
			widths[k] = max(widths[k], twwidth.Width(r[i]))
		}
	}
	if width > 0 {
		total := 1
		for _, cw := range widths {
			total += cw + 3 // "│ " before, " " after
		}
		maxOrder := 0
		for _, i := range keep {
			maxOrder = max(maxOrder, t.cols[i].Shrink)
		}
		for order := 1; order <= maxOrder && total > width; order++ {
			for k, i := range keep {
				c := t.cols[i]
				if c.Shrink != order {
					continue
				}
				least := c.Min
				if least == 0 {
					least = 8
				}
				least = max(least, twwidth.Width(c.Name))
				if cut := min(total-width, widths[k]-least); cut > 0 {
					widths[k] -= cut
					total -= cut
				}
			}
		}
	}
	headers := make([]string, len(keep))
	for k, i := range keep {
		headers[k] = t.cols[i].Name
	}
	tw := tablewriter.NewWriter(w)
	tw.Header(headers)
	for _, r := range t.rows {
		cells := make([]string, len(keep))
		for k, i := range keep {
			cells[k] = r[i]
			if twwidth.Width(cells[k]) > widths[k] {
				if t.cols[i].Wrap {
					cells[k] = strings.Join(wrapCell(cells[k], widths[k]), "\n")
				} else {
					cells[k] = cut(cells[k], widths[k])
				}
			}
		}
		if err := tw.Append(cells); err != nil {
			return fmt.Errorf("rendering table: %w", err)
		}
	}
	if err := tw.Render(); err != nil {
		return fmt.Errorf("rendering table: %w", err)
	}
	return nil
}

// empty reports whether column i has nothing in any row.
func (t *table) empty(i int) bool {
	for _, r := range t.rows {
		if c := r[i]; c != "" && c != "-" && c != "off" {
			return false
		}
	}
	return true
}

// count renders n, or "-" where nothing happened, so that the numbers that
// matter stand out of a column of zeros.
func count(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

// hiddenFooter is the line under a table whose rows without calls were
// left out.
func hiddenFooter(w io.Writer, hidden int, what string) {
	if hidden > 0 {
		fmt.Fprintf(w, "%s without calls not shown (--all shows them)\n", plural(hidden, what))
	}
}

// wrapCell breaks s at spaces into lines of at most width columns; a word
// longer than a line is cut.
func wrapCell(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		if twwidth.Width(w) > width {
			w = cut(w, width)
		}
		if line != "" && twwidth.Width(line)+1+twwidth.Width(w) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(lines, line)
}

// cut shortens s to width columns of the terminal, "..." included.
func cut(s string, width int) string {
	if twwidth.Width(s) <= width {
		return s
	}
	var b strings.Builder
	w := 0
	for _, r := range s {
		rw := twwidth.Width(string(r))
		if w+rw > width-3 {
			break
		}
		b.WriteRune(r)
		w += rw
	}
	return b.String() + "..."
}
