package observer

import "testing"

func TestCgroupPath(t *testing.T) {
	for in, want := range map[string]string{
		"/sys/fs/cgroup/kubepods.slice/pod1":    "/kubepods.slice/pod1",
		"/sys/fs/cgroup/unified/system.slice":   "/system.slice",
		"/kubepods/burstable/pod1/":             "/kubepods/burstable/pod1",
		"slurm/uid_0/job_42":                    "/slurm/uid_0/job_42",
		"/sys/fs/cgroup":                        "/",
		"/sys/fs/cgroupx/a":                     "/sys/fs/cgroupx/a",
		"/sys/fs/cgroup/cpu,cpuacct/slurm/job1": "/cpu,cpuacct/slurm/job1",
	} {
		if got := cgroupPath(in); got != want {
			t.Errorf("cgroupPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInCgroup(t *testing.T) {
	v2 := "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n"
	v1 := "12:cpu,cpuacct:/slurm/uid_0/job_42/step_0\n1:name=systemd:/user.slice\n"
	for _, c := range []struct {
		text, want string
		in         bool
	}{
		{v2, "/kubepods.slice", true},
		{v2, "/kubepods.slice/kubepods-pod1.slice", true},
		{v2, "/kubepods.slice/kubepods-pod2.slice", false},
		{v2, "/kubepods.sl", false}, // a prefix of a name is not a parent
		{v2, "/", true},
		{v1, "/slurm/uid_0/job_42", true},
		{v1, "/cpu,cpuacct/slurm/uid_0/job_42", true}, // mounted as /sys/fs/cgroup/cpu,cpuacct
		{v1, "/cpu/slurm/uid_0/job_42", true},
		{v1, "/systemd/user.slice", true},
		{v1, "/slurm/uid_0/job_43", false},
		{"", "/x", false},
	} {
		if got := inCgroup(c.text, c.want); got != c.in {
			t.Errorf("inCgroup(%q, %q) = %v, want %v", c.text, c.want, got, c.in)
		}
	}
}

func TestCommOf(t *testing.T) {
	if got := commOf("a-very-long-program-name"); got != "a-very-long-pro" {
		t.Errorf("commOf = %q: the kernel keeps 15 bytes", got)
	}
	if got := commOf("python3"); got != "python3" {
		t.Errorf("commOf = %q", got)
	}
}
