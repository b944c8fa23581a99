/* Request/response in one thread: what each tracked syscall costs, without
 * the scheduler's noise. One round trip writes SIZE bytes on end A, reads
 * them on end B, writes them back on B and reads them on A: the syscalls of
 * bench/pingpong.c's round trip, with no context switch between them (TCP
 * loopback delivers a write's segment before the write returns).
 *   usage: rtloop MODE SIZE SECONDS OUT [CPU]
 *   MODE   pipe   two pipes
 *          unix   a UNIX stream socketpair
 *          tcp    TCP over loopback (TCP_NODELAY), both ends in this thread
 * OUT gets wall-clock ns per round trip over the measured SECONDS (after a
 * warm-up of 10,000 round trips), then the round trips made in all. CPU >= 0 pins the thread to that CPU. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The whole of n bytes: a stream may hand them over in parts. */
static void rd_full(int fd, char *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = read(fd, buf + done, n - done);
		if (r <= 0)
			die("read");
		done += r;
	}
}

static void wr(int fd, const char *buf, size_t n)
{
	if (write(fd, buf, n) != (ssize_t)n)
		die("write");
}

/* Two connected loopback TCP sockets with Nagle off, a and b. */
static void tcp_pair(int *a, int *b)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);

	if (lst < 0 || bind(lst, (struct sockaddr *)&sa, sizeof(sa)) || listen(lst, 1) ||
	    getsockname(lst, (struct sockaddr *)&sa, &len))
		die("listen");
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa)))
		die("connect");
	*b = accept(lst, NULL, NULL);
	if (*b < 0)
		die("accept");
	close(lst);
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(*b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int main(int argc, char **argv)
{
	int a_out, b_in, b_out, a_in;	/* A writes a_out, B reads b_in; back: b_out to a_in */
	double secs, t0, t;
	long size, n = 0;
	char *buf;
	FILE *out;

	if (argc < 5) {
		fprintf(stderr, "usage: rtloop pipe|unix|tcp SIZE SECONDS OUT [CPU]\n");
		return 2;
	}
	size = atol(argv[2]);
	secs = atof(argv[3]);
	if (size <= 0 || size > 65536 || secs <= 0) {
		fprintf(stderr, "rtloop: SIZE must be 1..65536 and SECONDS > 0\n");
		return 2;
	}
	if (argc > 5 && atoi(argv[5]) >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(atoi(argv[5]), &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity");
	}
	buf = calloc(1, size);
	if (!strcmp(argv[1], "pipe")) {
		int p[2], q[2];

		if (pipe(p) || pipe(q))
			die("pipe");
		a_out = p[1], b_in = p[0], b_out = q[1], a_in = q[0];
	} else if (!strcmp(argv[1], "unix")) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair");
		a_out = a_in = sv[0], b_in = b_out = sv[1];
	} else if (!strcmp(argv[1], "tcp")) {
		int a, b;

		tcp_pair(&a, &b);
		a_out = a_in = a, b_in = b_out = b;
	} else {
		fprintf(stderr, "rtloop: unknown mode %s (pipe, unix or tcp)\n", argv[1]);
		return 2;
	}
	for (int i = 0; i < 10000; i++) {
		wr(a_out, buf, size), rd_full(b_in, buf, size);
		wr(b_out, buf, size), rd_full(a_in, buf, size);
	}
	t0 = now();
	do {
		for (int i = 0; i < 1024; i++, n++) {
			wr(a_out, buf, size), rd_full(b_in, buf, size);
			wr(b_out, buf, size), rd_full(a_in, buf, size);
		}
		t = now();
	} while (t - t0 < secs);
	out = fopen(argv[4], "w");
	if (!out || fprintf(out, "%.1f %ld\n", (t - t0) * 1e9 / n, n + 10000) < 0 || fclose(out))
		die(argv[4]);
	return 0;
}
