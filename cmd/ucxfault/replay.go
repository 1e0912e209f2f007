package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/recording"
)

func newReplayCmd() *cobra.Command {
	var from, key string
	var cycle bool
	var process, part string
	cmd := &cobra.Command{
		Use:   "replay [--from FILE] [--key function|global] [--cycle]",
		Short: "Replay recorded outcomes into injected processes",
		Long: `Without --from, each process replays its own recording (record-toggle on
first). With --from, the recording file is read and checked first; nothing is
sent if it is not a valid recording. By default the k-th call of each
function gets the k-th recorded outcome of that function (--key function);
--key global keeps one cursor over all hooked calls, as the original tool did.
After the last outcome calls pass, unless --cycle starts over. A failure that
was recorded on completion is delivered on completion when the operation
returns a request, and at once when it completes at once.

A recording of several processes (an MPI job, or 'observe' of several
processes or --all) is replayed rank by rank: each process gets the part
recorded for its rank. --part picks one part for every target: by its index
(N), the pid it was recorded from (pid:PID) or its rank (rank:R).

A recorded endpoint failure becomes a kill of the same endpoint with the same
code (as kill-ep): before the first replayed call at or after its position,
or, when no replayed call follows it (an incident file of 'ucxfault watch'
holds no calls), as long after that endpoint's creation in the target as it
came after the recorded one's; such a kill waits for its endpoint to be
created, and status shows where it stands.`,
		Example: `  ucxfault replay --from ucxfault-observe-4242.json --pid 5151
  ucxfault replay --from incident.json --part pid:4242 --pid 5151
  ucxfault replay --from job.json --part rank:3 --pid 5151
  ucxfault replay --from ucxfault-incident-node7-4242-ep0-20261130T202512.154555.json --pid 5151
  ucxfault replay --from job.json --process 4242   # the part recorded from pid 4242 (or an index), into every target`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, _ []string) error {
			format, err := outputFormat()
			if err != nil {
				return err
			}
			if key != "function" && key != "global" {
				return usagef("--key %q (accepted: function, global)", key)
			}
			if from == "" {
				return runControl(c.OutOrStdout(), c.ErrOrStderr(), &control.Request{Cmd: control.CmdReplaySelf,
					Schedule: &control.WireReplay{Key: key, Cycle: cycle}})
			}
			f, err := recording.ReadFile(from)
			if err != nil {
				return usageError{err}
			}
			if len(f.Processes) == 0 {
				return usagef("%s: recording holds no process", from)
			}
			chosen, err := pickProcess(f, process, from)
			if err != nil {
				return err
			}
			if part != "" {
				if chosen >= 0 {
					return usagef("give --part or --process, not both")
				}
				i, err := pickPart(f, part)
				if err != nil {
					return usagef("--part %s: %w", part, err)
				}
				chosen = i
			}
			for i, p := range f.Processes {
				if !p.Complete {
					fmt.Fprintf(c.ErrOrStderr(), "warning: %s process %d (pid %d) is incomplete (%d dropped events, %d overwritten records, %d unmatched); replaying what it holds\n",
						from, i, p.PID, p.Lost.DroppedEvents, p.Lost.OverwrittenRecords, p.Lost.UnmatchedEntries+p.Lost.UnmatchedReturns)
				}
			}
			if len(f.Processes) == 1 || chosen >= 0 {
				// One part for every target: refuse here, before any
				// process is asked, a part that holds nothing to replay
				// (an incident of an endpoint created before the watch).
				p := &f.Processes[max(chosen, 0)]
				if sched, dropped := control.ScheduleFromProcess(p, key, cycle, from); len(sched.Calls) == 0 && len(sched.Global) == 0 && len(sched.Timed) == 0 {
					why := "no call that takes an outcome (status queries, frees and cancels take none) and no endpoint failure"
					if dropped > 0 {
						why = fmt.Sprintf("%s with no recorded creation of its endpoint (created before the recording began), so no moment to kill it at", plural(dropped, "endpoint failure"))
					}
					return usagef("%s: nothing to replay: %s holds %s", from, processLabel(*p), why)
				}
			}
			if fileBackend() {
				return usagef("replay --from needs the socket backend")
			}
			list, err := targets(c.ErrOrStderr())
			if err != nil {
				return err
			}
			pick := func(rank int) (*recording.Process, error) {
				if len(f.Processes) == 1 || chosen >= 0 {
					return &f.Processes[max(chosen, 0)], nil
				}
				for i := range f.Processes {
					if f.Processes[i].Rank == rank && rank >= 0 {
						return &f.Processes[i], nil
					}
				}
				what := "this process has no rank"
				if rank >= 0 {
					what = fmt.Sprintf("no part is recorded for rank %d", rank)
				}
				return nil, fmt.Errorf("%s holds %s and %s: give --process with one of them (%s)",
					from, plural(len(f.Processes), "process"), what, processChoices(f))
			}
			ranks := map[int]int{}
			if len(f.Processes) > 1 && chosen < 0 {
				for _, r := range control.Broadcast(list, &control.Request{Cmd: control.CmdStatus}, global.timeout) {
					if r.Err == nil && r.Resp.Status != nil {
						ranks[r.Target.PID] = r.Resp.Status.Rank
					}
				}
			}
			var failed int
			replies := []reply{}
			for _, t := range list {
				rank, ok := ranks[t.PID]
				if !ok {
					rank = -1
				}
				p, err := pick(rank)
				if err != nil {
					fmt.Fprintf(c.ErrOrStderr(), "pid %d: %v\n", t.PID, err)
					replies = append(replies, reply{PID: t.PID, Error: err.Error()})
					failed++
					continue
				}
				src := fmt.Sprintf("%s, %s", from, processLabel(*p))
				sched, dropped := control.ScheduleFromProcess(p, key, cycle, src)
				if dropped > 0 {
					fmt.Fprintf(c.ErrOrStderr(), "pid %d: %d recorded endpoint failures come after the last replayed call, and the recording holds no creation of their endpoint to place them by time: not replayed\n", t.PID, dropped)
				}
				req := &control.Request{Cmd: control.CmdReplay, Schedule: sched}
				resp, err := control.Send(t, req, global.timeout)
				switch {
				case err != nil:
					fmt.Fprintf(c.ErrOrStderr(), "pid %d: %v\n", t.PID, err)
					replies = append(replies, reply{PID: t.PID, Error: err.Error()})
					failed++
				case !resp.OK:
					fmt.Fprintf(c.ErrOrStderr(), "pid %d: refused: %s\n", t.PID, resp.Error)
					replies = append(replies, reply{PID: t.PID, Error: resp.Error})
					failed++
				case format == formatJSON:
					replies = append(replies, reply{PID: t.PID, OK: true, Message: resp.Message})
				default:
					fmt.Fprintf(c.OutOrStdout(), "pid %d: %s\n", t.PID, resp.Message)
				}
			}
			if format == formatJSON {
				if err := writeJSON(c.OutOrStdout(), replies); err != nil {
					return err
				}
			}
			if failed > 0 {
				return errors.New("replay did not reach every process")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "recording file to replay (default: each process's own recording)")
	cmd.Flags().StringVar(&key, "key", "function", "function: a cursor per function; global: one cursor over all calls")
	cmd.Flags().BoolVar(&cycle, "cycle", false, "start over after the last recorded outcome")
	cmd.Flags().StringVar(&process, "process", "", "replay this process of a multi-process recording into every target: its pid, or its index from 0")
	cmd.Flags().StringVar(&part, "part", "", "replay one part into every target: N (its index), pid:PID or rank:R")
	return cmd
}

// pickPart returns the index of the part of f that sel names: N (an
// index), pid:PID (the process it was recorded from) or rank:R.
func pickPart(f *recording.File, sel string) (int, error) {
	kind, val, ok := strings.Cut(sel, ":")
	if !ok {
		kind, val = "index", sel
	}
	n, err := strconv.Atoi(val)
	if err != nil {
		return 0, fmt.Errorf("want N, pid:PID or rank:R")
	}
	var held []string
	for i, p := range f.Processes {
		held = append(held, fmt.Sprintf("%d: pid %d rank %d", i, p.PID, p.Rank))
		switch {
		case kind == "index" && i == n, kind == "pid" && p.PID == n, kind == "rank" && p.Rank == n:
			return i, nil
		}
	}
	if kind != "index" && kind != "pid" && kind != "rank" {
		return 0, fmt.Errorf("want N, pid:PID or rank:R")
	}
	return 0, fmt.Errorf("no such part; the recording holds %s", strings.Join(held, ", "))
}

// pickProcess reads --process: an index into the recording's processes
// (0, 1, ...) or the pid of one of them; -1 when not given.
func pickProcess(f *recording.File, text, from string) (int, error) {
	if text == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(text)
	if err == nil && n >= 0 {
		for i, p := range f.Processes {
			if p.PID == n {
				return i, nil
			}
		}
		if n < len(f.Processes) {
			return n, nil
		}
	}
	return 0, usagef("--process %q: %s holds %s: %s", text, from, plural(len(f.Processes), "process"), processChoices(f))
}

// processChoices lists what --process accepts for f: "0 or pid 123 (rank
// 0, 40 calls), 1 or pid 124 (rank 1, 38 calls)".
func processChoices(f *recording.File) string {
	parts := make([]string, len(f.Processes))
	for i, p := range f.Processes {
		rank := "no rank"
		if p.Rank >= 0 {
			rank = fmt.Sprintf("rank %d", p.Rank)
		}
		parts[i] = fmt.Sprintf("%d or pid %d (%s, %s)", i, p.PID, rank, plural(len(p.Calls), "call"))
	}
	return strings.Join(parts, ", ")
}
