package proc

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	st, err := parseStat([]byte("4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 0 0\n"))
	if err != nil || st.state != 'S' || st.startTime != 987654 {
		t.Errorf("parseStat = %+v, %v; want state S, start 987654", st, err)
	}
	for _, bad := range []string{"", "4242 (x", "4242 (x) S 1 2", "4242 (x) S 1 4242 4242 0 -1 1 1 1 1 1 1 1 1 1 20 0 1 0 notanumber 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestStartTime(t *testing.T) {
	self, err := SelfStartTime()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := StartTime(os.Getpid()); err != nil || st != self {
		t.Fatalf("StartTime(getpid) = %d, %v; SelfStartTime = %d", st, err, self)
	}
	before := time.Now()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	wall, err := StartWall(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// btime is rounded down to a second, and ticks are 10 ms.
	if wall.Before(before.Add(-1100*time.Millisecond)) || wall.After(time.Now()) {
		t.Errorf("child started at %v, between %v and now by the wall clock", wall, before)
	}
	if _, err := StartTime(pidAboveMax(t)); !errors.Is(err, ErrNoProcess) {
		t.Errorf("StartTime of a pid above pid_max: %v, want ErrNoProcess", err)
	}
}

func pidAboveMax(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n + 1
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("Alive(self) = false")
	}
	if Alive(pidAboveMax(t)) || Alive(0) || Alive(-1) {
		t.Error("Alive true for a pid that names no process")
	}
	// A child that exited and was not reaped is a zombie: not alive,
	// although its pid still exists.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := readStat("/proc/"+strconv.Itoa(pid)+"/stat", pid)
		if err != nil {
			t.Fatal(err)
		}
		if st.state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d still in state %c after 10s", pid, st.state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("Alive(zombie %d) = true", pid)
	}
}

func TestTgid(t *testing.T) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		if tgid, err := Tgid(tid); err != nil || tgid != os.Getpid() {
			t.Errorf("Tgid(%d) = %d, %v; want %d", tid, tgid, err, os.Getpid())
		}
	}
}

func TestCommandAndRank(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		rank int
	}{
		{nil, NoRank},
		{[]string{"OMPI_COMM_WORLD_RANK=3"}, 3},
		{[]string{"PMIX_RANK=x", "PMI_RANK=2"}, 2},
		{[]string{"SLURM_PROCID=-4"}, NoRank},
		{[]string{"SLURM_PROCID=7", "OMPI_COMM_WORLD_RANK=0"}, 0},
	} {
		cmd := exec.Command("sh", "-c", "sleep 30; :", "", "a b")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tc.env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		// Until exec completes, /proc shows the parent's command and
		// environment.
		deadline := time.Now().Add(10 * time.Second)
		var args []string
		for {
			var err error
			if args, err = Command(pid); err == nil && len(args) > 0 && args[0] == "sh" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("command of %d: %q, %v", pid, args, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !slices.Equal(args, []string{"sh", "-c", "sleep 30; :", "", "a b"}) {
			t.Errorf("Command = %q", args)
		}
		r, err := ProcessRank(pid)
		if err != nil || r != tc.rank {
			t.Errorf("env %q: ProcessRank = %d, %v; want %d", tc.env, r, err, tc.rank)
		}
		environ := []byte(strings.Join(cmd.Env, "\x00") + "\x00")
		if r := RankFromEnviron(environ); r != tc.rank {
			t.Errorf("env %q: RankFromEnviron = %d, want %d", tc.env, r, tc.rank)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}
