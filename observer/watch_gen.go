package observer

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64,arm64 -cflags "-mcpu=v3 -Wall -Werror" -type wevent watch ../bpf/watch.bpf.c
