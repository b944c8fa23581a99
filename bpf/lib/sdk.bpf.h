/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The in-process SDK's slots (struct cw_sdk_slot): a thread that attached
 * (t->sdk_slot != 0) may make its own record current by writing its slot,
 * with no syscall; the shim takes it at the thread's next write, fork or
 * exec, and writes back what the thread adopts from bytes it reads. Threads
 * without a slot pay one load of t->sdk_slot. Needs the map sdk_procs.
 */
#ifndef CW_SDK_BPF_H
#define CW_SDK_BPF_H

static __always_inline struct cw_sdk_slot *sdk_slot(const struct cw_task *t)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 idx = t->sdk_slot - 1;
	void *slots = bpf_map_lookup_elem(&sdk_procs, &tgid);

	if (!slots)
		return NULL;
	return bpf_map_lookup_elem(slots, &idx);
}

/* Before bytes leave or a child is made: take the record the thread's own code set. */
static __always_inline void sdk_sync(struct cw_task *t)
{
	struct cw_sdk_slot *s;
	__u32 gen;

	if (!t->sdk_slot)
		return;
	s = sdk_slot(t);
	if (!s)
		return;
	gen = *(volatile __u32 *)&s->app_gen;
	if (s->app_active) {
		if (gen == t->sdk_gen || !gen)
			return;	/* already taken; later sends continue its chain */
		if (s->app_rec.version != CW_RECORD_VERSION) {
			count(CW_C_SDK_INVALID, 1);
			t->sdk_gen = gen;
			return;
		}
		t->rec = s->app_rec;
		t->src = 0;
		t->sdk_gen = gen;
		count(CW_C_SDK_SYNCS, 1);
		sched_note(t);
	} else if (t->sdk_gen) {
		/* The code left its context: back to what the kernel adopted last. */
		t->rec = s->kern_rec;
		t->src = 0;
		t->sdk_gen = 0;
		sched_note(t);
	}
}

/* After the thread adopted a record from bytes it read: let its code see it. */
static __always_inline void sdk_publish(struct cw_task *t)
{
	struct cw_sdk_slot *s;

	t->sdk_gen = 0;	/* a context of the code's own is taken again at the next write */
	if (!t->sdk_slot)
		return;
	s = sdk_slot(t);
	if (!s)
		return;
	s->kern_rec = t->rec;
	asm volatile("" ::: "memory");	/* the record before its generation (x86 keeps store order) */
	s->kern_gen += 1;
}

#endif /* CW_SDK_BPF_H */
