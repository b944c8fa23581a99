// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * What one event costs inside the kernel, piece by piece (bench/event-cost.ts):
 * 100,000 events in a bpf_loop per BPF_PROG_TEST_RUN, each piece of the
 * shim's ev_start (bpf/lib/events.bpf.h) added to the ones before it; then,
 * for comparison, what the shim did before (the comm helper, two random
 * words for an id). The record is the size of struct cw_event
 * (CW_EVENT_BYTES, given by the bench).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);	/* 100,000 events fit: nothing is dropped */
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} id_gen SEC(".maps");

struct ev {
	__u64 w[CW_EVENT_BYTES / 8];
};

/* One struct, so that user space knows its layout in .bss. */
struct {
	__u32 pieces;	/* how many pieces to add to reserve + submit */
	__u32 pad;
	__u64 ns_x1000;	/* ns per event, times 1000 */
	__u64 made;
} ctl;

static long one(__u64 i, void *ctx)
{
	struct ev *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (!e)
		return 1;
	if (ctl.pieces >= 1)
		__builtin_memset(e, 0, sizeof(*e));
	if (ctl.pieces >= 2) {
		/* As the shim does it: two loads from the task (here through a cast: a test run has no BTF task). */
		struct task_struct *t = bpf_rdonly_cast((void *)bpf_get_current_task(), bpf_core_type_id_kernel(struct task_struct));

		__builtin_memcpy(&e->w[4], t->comm, 16);
	}
	if (ctl.pieces >= 3)
		e->w[0] = bpf_ktime_get_boot_ns();
	if (ctl.pieces >= 4) {
		/* As the shim's new_id: a counter per CPU, mixed (splitmix64). */
		__u32 zero = 0;
		__u64 *ctr = bpf_map_lookup_elem(&id_gen, &zero), z;

		if (ctr) {
			z = __sync_fetch_and_add(ctr, 0x9e3779b97f4a7c15ULL) + 0x9e3779b97f4a7c15ULL;
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
			e->w[1] = (z ^ (z >> 31)) & 0xffffffffffffULL;
		}
	}
	if (ctl.pieces >= 5 && bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA) > (1ULL << 40))
		flags = BPF_RB_FORCE_WAKEUP;
	if (ctl.pieces >= 6)
		bpf_get_current_comm(&e->w[6], 16);
	if (ctl.pieces >= 7)
		e->w[2] = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	bpf_ringbuf_submit(e, flags);
	ctl.made++;
	return 0;
}

SEC("raw_tp")
int run(void *ctx)
{
	__u64 t0 = bpf_ktime_get_ns();
	long n;

	ctl.made = 0;
	n = bpf_loop(100000, one, 0, 0);
	ctl.ns_x1000 = (bpf_ktime_get_ns() - t0) * 1000 / (n > 0 ? n : 1);
	return 0;
}
