package testutil

import (
	"reflect"
	"testing"
)

func TestParseOps(t *testing.T) {
	out := `READY pid=4056 transport=tcp threads=1
OP thread=0 seq=0 iter=0 fn=put size=8 status=0 name=Success how=completion us=5461
KILL peer pid=4057 at op=10
EPERR thread=0 status=-80 name=Endpoint_timeout
OP thread=1 seq=10 iter=3 fn=get size=8 status=-80 name=Endpoint_timeout how=immediate us=0
OP thread=0 seq=x iter=3 fn=get size=8 status=-80 name=broken how=immediate us=0
OP thread=0 seq=11 iter=3 fn=flush size=0 status=-20 name=Operation_timed_out how=timeout us=5000012
SUMMARY thread=0 ops=60 ok=10 failed=50
DONE failed=50
`
	want := []Op{
		{Thread: 0, Seq: 0, Iter: 0, Fn: "put", Size: 8, Status: 0, Name: "Success", How: "completion", US: 5461},
		{Thread: 1, Seq: 10, Iter: 3, Fn: "get", Size: 8, Status: -80, Name: "Endpoint_timeout", How: "immediate", US: 0},
		{Thread: 0, Seq: 11, Iter: 3, Fn: "flush", Size: 0, Status: -20, Name: "Operation_timed_out", How: "timeout", US: 5000012},
	}
	if got := ParseOps(out); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseOps:\n got %+v\nwant %+v", got, want)
	}
}

func TestRepoRoot(t *testing.T) {
	if root := RepoRoot(t); root == "" {
		t.Fatal("no repository root")
	}
}
