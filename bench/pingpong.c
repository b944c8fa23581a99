/* Pipe ping-pong: a parent and a child bounce a SIZE-byte message over two
 * pipes for SECONDS; writes round trips per second to OUT.
 * usage: pingpong SIZE SECONDS OUT [CPU]   (CPU >= 0 pins both to one CPU) */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void full(ssize_t (*op)(int, void *, size_t), int fd, char *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = op(fd, buf + done, n - done);
		if (r <= 0)
			exit(r == 0 ? 0 : 1);
		done += r;
	}
}

static ssize_t wr(int fd, void *b, size_t n) { return write(fd, b, n); }

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: pingpong SIZE SECONDS OUT [CPU]\n");
		return 2;
	}
	size_t size = strtoul(argv[1], NULL, 10);
	double secs = atof(argv[2]);
	int cpu = argc > 4 ? atoi(argv[4]) : -1;
	char *buf = calloc(1, size);
	int a[2], b[2];

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	if (pipe(a) || pipe(b))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		close(a[1]);
		close(b[0]);
		for (;;) {
			full(read, a[0], buf, size);
			full(wr, b[1], buf, size);
		}
	}
	close(a[0]);
	close(b[1]);
	for (int i = 0; i < 2000; i++) {	/* warm up */
		full(wr, a[1], buf, size);
		full(read, b[0], buf, size);
	}
	long n = 0;
	double start = now(), end = start + secs, t = start;
	while (t < end) {
		for (int i = 0; i < 256; i++) {
			full(wr, a[1], buf, size);
			full(read, b[0], buf, size);
		}
		n += 256;
		t = now();
	}
	close(a[1]);
	waitpid(child, NULL, 0);
	FILE *f = fopen(argv[3], "w");
	if (!f)
		return 1;
	fprintf(f, "%.1f\n", n / (t - start));
	fclose(f);
	return 0;
}
