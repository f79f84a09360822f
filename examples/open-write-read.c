/* rrr's example stimulus: one thread writes a file, a second thread reads it back, a third
 * renames itself. Small, deterministic and visible in a trace: openat, write, read, close on
 * two threads, prctl(PR_SET_NAME) on the third. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static const char path[] = "/tmp/rrr-example.txt";
static const char text[] = "hello from rrr\n";

static void *writer(void *arg)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	if (fd < 0)
		return (void *)1;
	ssize_t n = write(fd, text, sizeof(text) - 1);
	close(fd);
	return (void *)(long)(n != (ssize_t)sizeof(text) - 1);
}

static void *reader(void *arg)
{
	char buf[64] = { 0 };
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return (void *)1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return (void *)(long)(n <= 0 || strcmp(buf, text) != 0);
}

static void *namer(void *arg)
{
	return (void *)(long)(prctl(PR_SET_NAME, "rrr-renamed") != 0);
}

static int run(void *(*fn)(void *))
{
	pthread_t t;
	void *ret;
	if (pthread_create(&t, NULL, fn, NULL) != 0)
		return 1;
	pthread_join(t, &ret);
	return ret != NULL;
}

int main(void)
{
	int bad = run(writer);
	bad |= run(reader);
	bad |= run(namer);
	printf("rrr example: %s\n", bad ? "FAILED" : "ok");
	return bad;
}
