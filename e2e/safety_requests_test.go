package e2e

// Safety of the control channel against bad requests: size bounds and
// random lines.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

func TestSafetyRequestBounds(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put")
	path := h.socketOf(e.PID)
	req := func(v map[string]any) string {
		v["v"] = 1
		b, _ := json.Marshal(v)
		return sendLine(t, path, string(b)+"\n")
	}
	codes := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = -1 - i%100
		}
		return out
	}
	// At the bounds: accepted.
	if r := req(map[string]any{"cmd": "pattern", "pattern": strings.Repeat("XO", control.MaxPattern/2)}); !strings.Contains(r, `"ok":true`) {
		t.Fatalf("pattern of %d: %q", control.MaxPattern, r)
	}
	if r := req(map[string]any{"cmd": "error_codes", "codes": codes(64)}); !strings.Contains(r, `"ok":true`) {
		t.Fatalf("64 codes: %q", r)
	}
	// Past them: refused, and nothing changes.
	for _, tc := range []struct {
		req  map[string]any
		want string
	}{
		{map[string]any{"cmd": "pattern", "pattern": strings.Repeat("X", control.MaxPattern+1)}, "pattern of 4097 characters, at most 4096"},
		{map[string]any{"cmd": "pattern", "pattern": strings.Repeat("O", 1<<20)}, "at most 4096"},
		{map[string]any{"cmd": "error_codes", "codes": codes(65)}, "65 codes, at most 64"},
		{map[string]any{"cmd": "error_codes", "codes": codes(100000)}, "at most 64"},
		{map[string]any{"cmd": "probability", "probability": 1e308}, "0 to 100"},
		{map[string]any{"cmd": "seed", "seed": -1}, "malformed"},
		{map[string]any{"cmd": "hooks", "hooks": []string{strings.Repeat("h", 1<<16)}, "on": true}, "unknown hook"},
	} {
		if r := req(tc.req); !strings.Contains(r, `"ok":false`) || !strings.Contains(r, tc.want) {
			t.Errorf("%v: response %.200q, want an error with %q", tc.req["cmd"], r, tc.want)
		}
	}
	st := h.status(t)[0]
	if len(st.Pattern) != control.MaxPattern || len(st.Codes) != 64 || st.Strategy != "pattern" {
		t.Fatalf("refused requests changed the settings: pattern of %d, %d codes, strategy %s", len(st.Pattern), len(st.Codes), st.Strategy)
	}
	// The CLI refuses the same before sending anything.
	if r := h.ctl(t, "pattern", strings.Repeat("X", control.MaxPattern+1)); r.code != 2 || !strings.Contains(r.stderr, "at most 4096") {
		t.Fatalf("CLI pattern of 4097: exit %d, stderr %q", r.code, r.stderr)
	}
	stillRunning(t, e)

	// The environment is bounded alike: an oversized setting leaves the
	// injector off, says so once, and the host runs.
	for _, env := range []string{
		"UCX_FAULT_PATTERN=" + strings.Repeat("X", control.MaxPattern+1),
		"UCX_FAULT_ERROR_CODES=" + codeList(65),
	} {
		cmd := exec.Command(h.rma, "--ops", "20", "--seq", "put")
		cmd.Env = h.preloadEnv("UCX_FAULT_ENABLED=1", "UCX_FAULT_STRATEGY=pattern", "UCX_FAULT_PATTERN=X", env)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%.40s...: host failed: %v\n%s", env, err, errb.String())
		}
		if f := failedIndices(testutil.ParseOps(string(out))); len(f) != 0 {
			t.Fatalf("%.40s...: the injector should be off, but ops failed at %v", env, f)
		}
		if n := strings.Count(errb.String(), "injector off"); n != 1 {
			t.Fatalf("%.40s...: %d reports, want one: %q", env, n, errb.String())
		}
	}
}

// codeList is "-1,-2,...,-n".
func codeList(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = strconv.Itoa(-1 - i)
	}
	return strings.Join(parts, ",")
}

// TestSafetySocketFuzz throws random and mutated requests at a live host
// through its socket, from several clients at once: whatever they say, the
// host keeps running and keeps answering.
func TestSafetySocketFuzz(t *testing.T) {
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--seq", "put,get,flush")
	path := h.socketOf(e.PID)
	const clients, perClient = 4, 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answered, closed int
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c)+1, 0x5afe))
			var conn net.Conn
			var br *bufio.Reader
			for i := 0; i < perClient; i++ {
				if conn == nil {
					var err error
					if conn, err = net.Dial("unix", path); err != nil {
						t.Errorf("client %d: dialing: %v", c, err)
						return
					}
					br = bufio.NewReader(conn)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				line := fuzzLine(rng)
				if strings.TrimSpace(line) == "" {
					// A blank line is skipped: no answer to wait for.
					io.WriteString(conn, line+"\n")
					continue
				}
				if _, err := io.WriteString(conn, line+"\n"); err == nil {
					if _, err := br.ReadString('\n'); err == nil {
						mu.Lock()
						answered++
						mu.Unlock()
						// The server closes the connection after an
						// error; so do we, half of the time anyway.
						if rng.IntN(2) == 0 {
							continue
						}
					}
				}
				mu.Lock()
				closed++
				mu.Unlock()
				conn.Close()
				conn = nil
			}
			if conn != nil {
				conn.Close()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d fuzzed requests: %d answered, %d connections closed", clients*perClient, answered, closed)
	if answered < clients*perClient/2 {
		t.Fatalf("only %d of %d requests were answered", answered, clients*perClient)
	}
	h.mustCtl(t, "rule", "clear")
	h.mustCtl(t, "reset")
	st := h.status(t)
	if len(st) != 1 || st[0].PID != e.PID {
		t.Fatalf("status after fuzzing: %+v", st)
	}
	stillRunning(t, e)
	if strings.Contains(e.Stderr(), "panic") || strings.Contains(e.Stderr(), "internal error") {
		t.Fatalf("the host's stderr shows a panic:\n%s", e.Stderr())
	}
}

// fuzzLine makes one request line: usually a JSON object with a real or an
// unknown command and fields of random types and values, sometimes cut
// short or sprinkled with random bytes.
func fuzzLine(rng *rand.Rand) string {
	cmds := []string{"status", "toggle", "enable", "disable", "probability", "error_codes", "pattern",
		"seed", "strategy", "reset", "hooks", "record", "record_clear", "record_dump", "replay",
		"replay_self", "replay_stop", "rules", "explode", ""}
	fields := []string{"v", "cmd", "probability", "pattern", "codes", "seed", "strategy", "hooks", "on",
		"count", "schedule", "detailed", "rule_op", "rules", "rule_id", "extra"}
	hookNames := []string{"ucp_put_nbx", "ucp_get_nbx", "ucp_ep_flush_nbx", "ucp_request_check_status", "all", "put_nbx", "bogus"}
	ruleTexts := []string{"hooks=ucp_put_nbx calls=100..200+10", "calls=5", "codes=-80", "max-faults=3",
		"calls=1..2+", "endpoint=1", "for=5s from-start", "calls=oops", "p=50", "; ;", ""}
	var value func(depth int) any
	value = func(depth int) any {
		switch rng.IntN(14) {
		case 0:
			return nil
		case 1:
			return rng.IntN(2) == 0
		case 2:
			return rng.IntN(300) - 150
		case 3:
			return rng.Float64()*400 - 200
		case 4:
			return []float64{1e308, -1e308, 0.001, 18446744073709551615, -9223372036854775808}[rng.IntN(5)]
		case 5:
			return strings.Repeat([]string{"X", "O", "XO", "x", "é", "\u0000"}[rng.IntN(6)], rng.IntN(5000))
		case 6:
			return cmds[rng.IntN(len(cmds))]
		case 7:
			return hookNames[rng.IntN(len(hookNames))]
		case 8:
			return ruleTexts[rng.IntN(len(ruleTexts))]
		case 9:
			n := rng.IntN(80)
			out := make([]int, n)
			for i := range out {
				out[i] = rng.IntN(210) - 105
			}
			return out
		case 10:
			if depth > 2 {
				return "deep"
			}
			n := rng.IntN(4)
			out := make([]any, n)
			for i := range out {
				out[i] = value(depth + 1)
			}
			return out
		case 11:
			if depth > 2 {
				return map[string]any{}
			}
			// A replay schedule, valid or not.
			calls := map[string]any{}
			for i := rng.IntN(3); i > 0; i-- {
				var outs []any
				for j := rng.IntN(50); j > 0; j-- {
					outs = append(outs, map[string]any{"code": rng.IntN(130) - 115, "deferred": rng.IntN(2) == 0})
				}
				calls[hookNames[rng.IntN(len(hookNames))]] = outs
			}
			s := map[string]any{"key": []string{"function", "global", "nope"}[rng.IntN(3)], "calls": calls, "cycle": rng.IntN(2) == 0}
			if rng.IntN(3) == 0 {
				s["global"] = []any{map[string]any{"fn": hookNames[rng.IntN(len(hookNames))], "code": rng.IntN(120) - 110}}
			}
			return s
		case 12:
			return []string{"add", "set", "del", "clear", "?"}[rng.IntN(5)]
		default:
			return []string{hookNames[rng.IntN(len(hookNames))], ruleTexts[rng.IntN(len(ruleTexts))]}
		}
	}
	req := map[string]any{"v": 1, "cmd": cmds[rng.IntN(len(cmds))]}
	if rng.IntN(10) == 0 {
		req["v"] = value(0)
	}
	for i := rng.IntN(4); i > 0; i-- {
		req[fields[rng.IntN(len(fields))]] = value(0)
	}
	if c, _ := req["cmd"].(string); c == "rules" {
		// Keep rule delays out: a delay is a feature that stalls the
		// host's calls on purpose, not a fault of the socket.
		req["rules"] = []string{ruleTexts[rng.IntN(len(ruleTexts))]}
	}
	b, err := json.Marshal(req)
	if err != nil {
		b = []byte(`{"v":1,"cmd":"status"}`)
	}
	line := string(b)
	switch rng.IntN(12) {
	case 0:
		line = line[:rng.IntN(len(line)+1)]
	case 1:
		bs := []byte(line)
		for i := rng.IntN(8); i > 0 && len(bs) > 0; i-- {
			bs[rng.IntN(len(bs))] = byte(rng.IntN(256))
		}
		line = strings.ReplaceAll(string(bs), "\n", " ")
	case 2:
		line = "[" + line + "]"
	}
	return line
}
