/* fork + exec + exit + wait rate: how fast a process can start a program and reap it.
 *   usage: forkexec SECONDS OUT [CPU]
 * Each round forks, the child execs this same binary with -x (which exits at
 * once), and the parent waits for it. OUT gets rounds per second.
 * CPU >= 0 pins the parent, and so its children, to one CPU. */
#define _GNU_SOURCE
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

/* One fork + exec + exit + wait. */
static void round_trip(char *self)
{
	char *argv[] = { self, "-x", NULL };
	char *envp[] = { NULL };
	int status;
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execve(self, argv, envp);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "forkexec: the child failed (status %#x)\n", status);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "-x"))
		_exit(0);	/* the exec'd child: nothing to do */
	if (argc < 3) {
		fprintf(stderr, "usage: forkexec SECONDS OUT [CPU]\n");
		return 2;
	}
	double secs = atof(argv[1]);
	int cpu = argc > 3 ? atoi(argv[3]) : -1;
	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (len <= 0)
		die("/proc/self/exe");
	self[len] = '\0';
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity");
	}
	for (int i = 0; i < 50; i++)	/* warm up */
		round_trip(self);
	long n = 0;
	double start = now(), t = start;
	while (t < start + secs) {
		for (int i = 0; i < 16; i++)
			round_trip(self);
		n += 16;
		t = now();
	}
	FILE *f = fopen(argv[2], "w");
	if (!f)
		die(argv[2]);
	fprintf(f, "%.1f\n", n / (t - start));
	fclose(f);
	return 0;
}
