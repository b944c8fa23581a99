// The scheduler experiment's load generator: one client class.
//
//   loadgen PORT THREADS INTERVAL_MS START_MS WARM_MS DUR_MS OUT PRIORITY
//
// THREADS threads each send `GET /work` to 127.0.0.1:PORT on a new connection
// (Connection: close, and an X-Priority: PRIORITY header, which only the
// front's in-app reference reads), read the reply to its end, and start again: at once
// (INTERVAL_MS 0: a closed loop) or at the thread's next slot, one every
// INTERVAL_MS (the threads' slots are spread evenly over the interval; a
// thread that is behind sends at once). Load starts at START_MS (Unix time in
// ms, so that two classes started by separate runs begin together) and stops
// at START_MS + WARM_MS + DUR_MS; requests that complete in the last DUR_MS
// are measured. OUT gets one line of totals, then each measured request's
// latency (send to end of reply) in microseconds, one a line:
//   requests N errors E late_ms L
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port, threads;
static char req[160];
static size_t req_len;
static int64_t interval_ns, start_ns, measure_ns, end_ns;

struct worker {
	int index;
	int64_t *lat;
	size_t n, cap;
	long errors;
	pthread_t thread;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = { .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

// One request on a new connection; 0 if the reply was a whole 200.
static int request(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { .tv_sec = 60 };
	char buf[4096];
	size_t got = 0;
	int one = 1, ok = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || write(fd, req, req_len) != (ssize_t)req_len)
		goto out;
	for (;;) {
		ssize_t r = read(fd, buf + (got < 16 ? got : 16), sizeof(buf) - 16);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		got += r;
	}
	ok = got > 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0;
out:
	close(fd);
	return ok ? 0 : -1;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int64_t next = start_ns + (interval_ns ? interval_ns * w->index / threads : 0);

	for (;;) {
		int64_t t0, t1;

		if (interval_ns)
			sleep_until(next);
		t0 = now_ns();
		if (t0 >= end_ns)
			break;
		if (request() < 0) {
			w->errors++;
			usleep(1000);
			continue;
		}
		t1 = now_ns();
		if (t1 >= measure_ns && t1 < end_ns) {
			if (w->n == w->cap) {
				w->cap = w->cap ? 2 * w->cap : 4096;
				w->lat = realloc(w->lat, w->cap * sizeof(*w->lat));
				if (!w->lat) {
					perror("loadgen: realloc");
					exit(1);
				}
			}
			w->lat[w->n++] = (t1 - t0) / 1000;
		}
		next += interval_ns;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec real;
	int64_t start_ms, late_ms, total = 0, errors = 0;
	struct worker *ws;
	FILE *out;
	int i;

	if (argc != 9) {
		fprintf(stderr, "usage: loadgen PORT THREADS INTERVAL_MS START_MS WARM_MS DUR_MS OUT PRIORITY\n");
		return 2;
	}
	req_len = snprintf(req, sizeof(req), "GET /work HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Priority: %d\r\nConnection: close\r\n\r\n",
			   atoi(argv[8]));
	port = atoi(argv[1]);
	threads = atoi(argv[2]);
	interval_ns = atoll(argv[3]) * 1000000;
	start_ms = atoll(argv[4]);
	// The Unix start time, as a CLOCK_MONOTONIC time.
	clock_gettime(CLOCK_REALTIME, &real);
	late_ms = ((int64_t)real.tv_sec * 1000 + real.tv_nsec / 1000000) - start_ms;
	start_ns = now_ns() - late_ms * 1000000;
	measure_ns = start_ns + atoll(argv[5]) * 1000000;
	end_ns = measure_ns + atoll(argv[6]) * 1000000;
	if (late_ms < 0) {
		sleep_until(start_ns);
		late_ms = 0;
	}
	ws = calloc(threads, sizeof(*ws));
	for (i = 0; i < threads; i++) {
		ws[i].index = i;
		if (pthread_create(&ws[i].thread, NULL, run, &ws[i])) {
			perror("loadgen: pthread_create");
			return 1;
		}
	}
	for (i = 0; i < threads; i++) {
		pthread_join(ws[i].thread, NULL);
		total += ws[i].n;
		errors += ws[i].errors;
	}
	out = fopen(argv[7], "w");
	if (!out) {
		perror("loadgen: open OUT");
		return 1;
	}
	fprintf(out, "requests %lld errors %lld late_ms %lld\n", (long long)total, (long long)errors, (long long)late_ms);
	for (i = 0; i < threads; i++)
		for (size_t k = 0; k < ws[i].n; k++)
			fprintf(out, "%lld\n", (long long)ws[i].lat[k]);
	return fclose(out) ? 1 : 0;
}
