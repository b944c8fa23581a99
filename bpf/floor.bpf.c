// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The "floor" for benchmarks: the shim's hooks with programs that return at
 * once, so that what the kernel's hook mechanism costs by itself can be told
 * apart from what the shim's own work costs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_enter) { return 0; }

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_exit) { return 0; }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(floor_fork) { return 0; }

SEC("tp_btf/sched_process_exec")
int BPF_PROG(floor_exec) { return 0; }

SEC("tp_btf/sched_process_exit")
int BPF_PROG(floor_exit_task) { return 0; }

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(floor_tcp_send) { return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(floor_sock_recv) { return 0; }
