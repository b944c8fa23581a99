/* Runs bench/ev_parts.bpf.o once per piece; prints "piece<TAB>ns per event" lines.
 *   usage: ev_parts OBJECT */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <string.h>

static const char *names[] = {
	"ring buffer reserve + submit (288 bytes)",
	"+ zero the record",
	"+ command name (two loads from the task)",
	"+ clock (bpf_ktime_get_boot_ns)",
	"+ event id (a counter per CPU, mixed)",
	"+ backlog check (bpf_ringbuf_query): the shim's ev_start",
	"for comparison, + bpf_get_current_comm (the shim's command name before)",
	"for comparison, + two bpf_get_prandom_u32 (its event id before)",
};

static int skip(void *ctx, void *data, size_t size) { return 0; }

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_map *bss, *rb;
	struct ring_buffer *reader;
	int prog, zero = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: ev_parts OBJECT\n");
		return 2;
	}
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		perror("ev_parts: load");
		return 1;
	}
	prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "run"));
	bss = bpf_object__find_map_by_name(obj, ".bss");
	rb = bpf_object__find_map_by_name(obj, "rb");
	reader = ring_buffer__new(bpf_map__fd(rb), skip, NULL, NULL);
	if (!bss || !rb || !reader) {
		fprintf(stderr, "ev_parts: maps not found\n");
		return 1;
	}
	for (unsigned p = 0; p < sizeof(names) / sizeof(names[0]); p++) {
		struct { __u32 pieces; __u32 pad; __u64 ns_x1000, made; } v;
		LIBBPF_OPTS(bpf_test_run_opts, opts);

		memset(&v, 0, sizeof(v));
		v.pieces = p;
		if (bpf_map_update_elem(bpf_map__fd(bss), &zero, &v, 0) || bpf_prog_test_run_opts(prog, &opts) ||
		    bpf_map_lookup_elem(bpf_map__fd(bss), &zero, &v)) {
			perror("ev_parts: run");
			return 1;
		}
		if (v.made != 100000) {
			fprintf(stderr, "ev_parts: %llu of 100000 events made\n", (unsigned long long)v.made);
			return 1;
		}
		ring_buffer__consume(reader);	/* empty for the next piece */
		printf("%s\t%.1f\n", names[p], v.ns_x1000 / 1000.0);
	}
	ring_buffer__free(reader);
	bpf_object__close(obj);
	return 0;
}
