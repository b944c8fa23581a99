/* Request/response and throughput between a parent and its child.
 *   usage: pingpong MODE SIZE SECONDS OUT [CPU]
 *   MODE   pipe     two pipes, SIZE-byte messages back and forth
 *          unix     a UNIX stream socketpair
 *          tcp      TCP over loopback (TCP_NODELAY)
 *          tcpns    TCP between two network namespaces: the child serves in
 *                   $PP_SERVER_NS on $PP_ADDR:$PP_PORT, the parent connects
 *                   from $PP_CLIENT_NS
 *          bulk     TCP over loopback, the child streams SIZE-byte writes
 * With PP_ROLE=server or PP_ROLE=client, tcpns runs one end only, so that the
 * two ends can live in separate processes (separate causeway runs): the server
 * serves one connection and exits at its end; the client retries its connect
 * for a few seconds, until the server listens.
 * OUT gets round trips per second (bytes per second for bulk).
 * CPU >= 0 pins both ends to one CPU. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

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

static void enter_ns(const char *name)
{
	char path[256];
	int fd;

	if (!name || !*name)
		return;
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0 || setns(fd, CLONE_NEWNET))
		die(path);
	close(fd);
}

static int tcp_listen(const char *addr, int port, int *bound)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	socklen_t len = sizeof(sa);
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);

	inet_pton(AF_INET, addr, &sa.sin_addr);
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) || listen(s, 1))
		die("listen");
	getsockname(s, (struct sockaddr *)&sa, &len);
	*bound = ntohs(sa.sin_port);
	return s;
}

static int tcp_connect(const char *addr, int port, double retry_secs)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	double until = now() + retry_secs;

	inet_pton(AF_INET, addr, &sa.sin_addr);
	while (connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
		if (now() > until)
			die("connect");
		close(s);
		s = socket(AF_INET, SOCK_STREAM, 0);
		usleep(10000);
	}
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return s;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: pingpong MODE SIZE SECONDS OUT [CPU]\n");
		return 2;
	}
	const char *mode = argv[1];
	size_t size = strtoul(argv[2], NULL, 10);
	double secs = atof(argv[3]);
	int cpu = argc > 5 ? atoi(argv[5]) : -1;
	char *buf = calloc(1, size);
	int to_child = -1, from_child = -1, child_in = -1, child_out = -1, ready[2], port = 0, lst = -1;
	bool bulk = strcmp(mode, "bulk") == 0;
	const char *addr = getenv("PP_ADDR") ? getenv("PP_ADDR") : "127.0.0.1";
	const char *role = getenv("PP_ROLE") ? getenv("PP_ROLE") : "";
	bool server_only = !strcmp(role, "server"), client_only = !strcmp(role, "client");

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	signal(SIGPIPE, SIG_IGN);
	if (pipe(ready))
		die("pipe");
	if (!strcmp(mode, "pipe")) {
		int a[2], b[2];
		if (pipe(a) || pipe(b))
			die("pipe");
		to_child = a[1], child_in = a[0], child_out = b[1], from_child = b[0];
	} else if (!strcmp(mode, "unix")) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair");
		to_child = from_child = sv[0];
		child_in = child_out = sv[1];
	} else if (!strcmp(mode, "tcp") || bulk) {
		lst = tcp_listen(addr, 0, &port);
	} else if (!strcmp(mode, "tcpns")) {
		port = getenv("PP_PORT") ? atoi(getenv("PP_PORT")) : 7100;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}

	if ((server_only || client_only) && strcmp(mode, "tcpns")) {
		fprintf(stderr, "PP_ROLE applies to tcpns only\n");
		return 2;
	}
	pid_t child = server_only ? 0 : client_only ? -1 : fork();
	if (child == 0) {
		if (!strcmp(mode, "tcpns")) {
			enter_ns(getenv("PP_SERVER_NS"));
			lst = tcp_listen(addr, port, &port);
		}
		if (!server_only && write(ready[1], "r", 1) != 1)
			die("ready");
		if (lst >= 0) {
			int one = 1;
			child_in = child_out = accept(lst, NULL, NULL);
			setsockopt(child_in, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		if (bulk)
			for (;;)
				if (write(child_out, buf, size) <= 0)
					exit(0);
		for (;;) {
			full(read, child_in, buf, size);
			full(wr, child_out, buf, size);
		}
	}
	if (!client_only && read(ready[0], buf, 1) != 1)
		die("ready");
	if (lst >= 0 || !strcmp(mode, "tcpns")) {
		if (!strcmp(mode, "tcpns"))
			enter_ns(getenv("PP_CLIENT_NS"));
		to_child = from_child = tcp_connect(addr, port, client_only ? 10 : 0);
	}

	double result;
	if (bulk) {
		double start = now(), t = start;
		long bytes = 0;
		while (t < start + secs) {
			ssize_t r = read(from_child, buf, size);
			if (r <= 0)
				die("read");
			bytes += r;
			if ((bytes & 0xfffff) < (unsigned long)r)
				t = now();
		}
		result = bytes / (now() - start);
	} else {
		for (int i = 0; i < 2000; i++) {	/* warm up */
			full(wr, to_child, buf, size);
			full(read, from_child, buf, size);
		}
		long n = 0;
		double start = now(), t = start;
		while (t < start + secs) {
			for (int i = 0; i < 256; i++) {
				full(wr, to_child, buf, size);
				full(read, from_child, buf, size);
			}
			n += 256;
			t = now();
		}
		result = n / (t - start);
	}
	if (client_only) {
		close(to_child);	/* the server sees the end and exits */
	} else {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	FILE *f = fopen(argv[4], "w");
	if (!f)
		die(argv[4]);
	fprintf(f, "%.1f\n", result);
	fclose(f);
	return 0;
}
