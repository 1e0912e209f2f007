package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ucxfault/ucxfault/control"
)

// targets finds the injected processes the command is for (findTargets).
// With --wait D it looks again, every 100 ms, until one is found or D has
// passed: a script can send a command right after starting a program, before
// the program has loaded libucp and opened its socket.
func targets(stderr io.Writer) ([]control.Target, error) {
	deadline := time.Now().Add(global.wait)
	for {
		list, err := findTargets(stderr)
		if err == nil || global.wait <= 0 || !errors.Is(err, control.ErrNoProcess) || time.Now().After(deadline) {
			return list, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cliNames maps the protocol's command names to the commands a user types,
// for messages: a person never typed kill_ep or replay_self.
var cliNames = map[string]string{
	control.CmdCodes:       "error-codes",
	control.CmdHooks:       "hook",
	control.CmdRecord:      "record-toggle",
	control.CmdRecordClear: "record-clear",
	control.CmdRecordDump:  "record-dump",
	control.CmdReplaySelf:  "replay",
	control.CmdReplayStop:  "replay",
	control.CmdRules:       "rule",
	control.CmdKillEP:      "kill-ep",
}

// commandOf is the CLI command that sends the protocol command cmd.
func commandOf(cmd string) string {
	if n, ok := cliNames[cmd]; ok {
		return n
	}
	return cmd
}

// reply is one process's answer to a control command, as -o json writes
// it: a list of these, one per process reached.
type reply struct {
	PID     int    `json:"pid"`
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

// runControl sends req and prints each process's answer (a JSON list with
// -o json), or appends it to the command file when the file backend is
// selected.
func runControl(out, stderr io.Writer, req *control.Request) error {
	format, err := outputFormat()
	if err != nil {
		return err
	}
	if fileBackend() {
		dir, err := fileDir(true)
		if err != nil {
			return err
		}
		if err := control.AppendCommand(dir, req); err != nil {
			return err
		}
		msg := fmt.Sprintf("appended %s to %s; injected processes apply it within 100 ms", commandOf(req.Cmd), control.CommandFile(dir))
		if format == formatJSON {
			fmt.Fprintln(stderr, msg)
			return writeJSON(out, []reply{})
		}
		fmt.Fprintln(out, msg)
		return nil
	}
	list, err := targets(stderr)
	if err != nil {
		if format == formatJSON {
			if e := writeJSON(out, []reply{}); e != nil {
				return e
			}
		}
		return err
	}
	results := control.Broadcast(list, req, global.timeout)
	ok, err := collect(stderr, results, req.Cmd)
	if format != formatJSON {
		for _, r := range ok {
			fmt.Fprintf(out, "pid %d: %s\n", r.Target.PID, r.Resp.Message)
		}
		return err
	}
	replies := make([]reply, 0, len(results))
	for _, r := range results {
		rep := reply{PID: r.Target.PID}
		switch {
		case r.Err != nil:
			rep.Error = r.Err.Error()
		case !r.Resp.OK:
			rep.Error = r.Resp.Error
		default:
			rep.OK, rep.Message = true, r.Resp.Message
		}
		replies = append(replies, rep)
	}
	if e := writeJSON(out, replies); e != nil {
		return e
	}
	return err
}
