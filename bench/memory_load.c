/* The traced load of bench/memory.ts, and a map entry counter.
 *   usage: memory_load threads|pipes|tcp N
 *          memory_load count MAP_ID
 * threads  N threads that wait on a condition variable
 * pipes    N pipes, one byte written to and read from each
 * tcp      N loopback TCP connections between this process (client) and a
 *          child (server); 8 bytes sent on each, client to server
 * The load modes talk over stdio: they print "base N" once set up (N may be
 * less than asked if RLIMIT_NOFILE cannot be raised), build the N
 * objects after a line on stdin, print "ready N", tear them down after the next
 * line, print "closed N", and exit after a third. EOF on stdin exits at once.
 * count prints how many keys map MAP_ID holds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t server = -1;

static void die(const char *what)
{
	perror(what);
	if (server > 0)
		kill(server, SIGKILL);
	exit(1);
}

/* Prints a stage name, then waits for the go-ahead; EOF ends the program. */
static void stage(const char *name, int n)
{
	char line[64];

	printf("%s %d\n", name, n);
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin)) {
		if (server > 0)
			kill(server, SIGKILL);
		exit(1);
	}
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int done;

static void *waiter(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	while (!done)
		pthread_cond_wait(&cond, &lock);
	pthread_mutex_unlock(&lock);
	return NULL;
}

static void threads(int n)
{
	pthread_t *t = calloc(n, sizeof(*t));
	pthread_attr_t attr;
	int err;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	stage("base", n);
	for (int i = 0; i < n; i++)
		if ((err = pthread_create(&t[i], &attr, waiter, NULL))) {
			errno = err;
			die("pthread_create");
		}
	stage("ready", n);
	pthread_mutex_lock(&lock);
	done = 1;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&lock);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	stage("closed", n);
}

static void pipes(int n)
{
	int (*p)[2] = calloc(n, sizeof(*p));
	char c = 'x';

	stage("base", n);
	for (int i = 0; i < n; i++) {
		if (pipe(p[i]))
			die("pipe");
		if (write(p[i][1], &c, 1) != 1 || read(p[i][0], &c, 1) != 1)
			die("pipe i/o");
	}
	stage("ready", n);
	for (int i = 0; i < n; i++) {
		close(p[i][0]);
		close(p[i][1]);
	}
	stage("closed", n);
}

/* Closes with a reset: no TIME_WAIT is left to hold the port. */
static void abort_close(int fd)
{
	struct linger l = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static void full_read(int fd, char *buf, size_t n)
{
	while (n) {
		ssize_t r = read(fd, buf, n);
		if (r <= 0)
			die("server read");
		buf += r;
		n -= r;
	}
}

static void tcp(int n)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int *fd = calloc(n, sizeof(*fd)), lst = socket(AF_INET, SOCK_STREAM, 0), up[2], down[2];
	char buf[8] = "causeway";

	if (bind(lst, (struct sockaddr *)&sa, sizeof(sa)) || listen(lst, 4096) ||
	    getsockname(lst, (struct sockaddr *)&sa, &len))
		die("listen");
	if (pipe(up) || pipe(down))
		die("pipe");
	server = fork();
	if (server < 0)
		die("fork");
	if (server == 0) {
		server = -1;
		close(up[0]);
		close(down[1]);
		for (int i = 0; i < n; i++) {
			fd[i] = accept(lst, NULL, NULL);
			if (fd[i] < 0)
				die("accept");
			full_read(fd[i], buf, sizeof(buf));
		}
		if (write(up[1], "r", 1) != 1)
			die("server ready");
		(void)!read(down[0], buf, 1);	/* a byte, or EOF if the client is gone: close */
		for (int i = 0; i < n; i++)
			abort_close(fd[i]);
		_exit(0);
	}
	close(lst);
	close(up[1]);
	close(down[0]);
	stage("base", n);
	for (int i = 0; i < n; i++) {
		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fd[i] < 0 || connect(fd[i], (struct sockaddr *)&sa, sizeof(sa)))
			die("connect");
		if (write(fd[i], buf, sizeof(buf)) != sizeof(buf))
			die("send");
	}
	if (read(up[0], buf, 1) != 1)
		die("the server failed");
	stage("ready", n);
	if (write(down[1], "c", 1) != 1)
		die("server close");
	for (int i = 0; i < n; i++)
		abort_close(fd[i]);
	if (waitpid(server, NULL, 0) != server)
		die("waitpid");
	server = -1;
	stage("closed", n);
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

static void count(unsigned id)
{
	union bpf_attr a;
	struct bpf_map_info info;
	unsigned char key[512], next[512];
	long n = 0;
	int fd;

	memset(&a, 0, sizeof(a));
	a.map_id = id;
	fd = sys_bpf(BPF_MAP_GET_FD_BY_ID, &a);
	if (fd < 0)
		die("BPF_MAP_GET_FD_BY_ID");
	memset(&info, 0, sizeof(info));
	memset(&a, 0, sizeof(a));
	a.info.bpf_fd = fd;
	a.info.info_len = sizeof(info);
	a.info.info = (unsigned long)&info;
	if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) || info.key_size > sizeof(key))
		die("BPF_OBJ_GET_INFO_BY_FD");
	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = 0;	/* NULL: the first key */
	a.next_key = (unsigned long)next;
	while (sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) == 0) {
		n++;
		memcpy(key, next, info.key_size);
		a.key = (unsigned long)key;
	}
	printf("%ld\n", n);
}

int main(int argc, char **argv)
{
	struct rlimit rl;

	if (argc != 3) {
		fprintf(stderr, "usage: memory_load threads|pipes|tcp N | count MAP_ID\n");
		return 2;
	}
	int n = atoi(argv[2]);

	if (!strcmp(argv[1], "count")) {
		count(n);
		return 0;
	}
	/* Two descriptors a pipe, one a connection per process, and some to spare;
	 * without CAP_SYS_RESOURCE the hard limit caps N (pipes). */
	rlim_t want = (rlim_t)(strcmp(argv[1], "pipes") ? 1 : 2) * n + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
		rl.rlim_cur = want;
		if (rl.rlim_max < want) {
			rl.rlim_max = want;
			if (setrlimit(RLIMIT_NOFILE, &rl)) {
				getrlimit(RLIMIT_NOFILE, &rl);
				rl.rlim_cur = rl.rlim_max;
			}
		}
		if (setrlimit(RLIMIT_NOFILE, &rl))
			die("setrlimit(RLIMIT_NOFILE)");
		if (rl.rlim_cur < want)
			n = (rl.rlim_cur - 64) / (strcmp(argv[1], "pipes") ? 1 : 2);
	}
	if (!strcmp(argv[1], "threads"))
		threads(n);
	else if (!strcmp(argv[1], "pipes"))
		pipes(n);
	else if (!strcmp(argv[1], "tcp"))
		tcp(n);
	else {
		fprintf(stderr, "unknown mode %s\n", argv[1]);
		return 2;
	}
	return 0;
}
