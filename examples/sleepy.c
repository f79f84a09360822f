/* A stimulus that mostly sleeps: it opens and writes a file five times, a second apart, as
 * syzkaller reproducers poll and wait. Its replay's time should follow the few million
 * instructions it runs, not its five seconds of sleep. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	for (int i = 0; i < 5; i++) {
		int fd = open("/tmp/rrr-sleepy.txt", O_CREAT | O_WRONLY | O_APPEND, 0644);
		if (fd < 0 || write(fd, "tick\n", 5) != 5)
			return 1;
		close(fd);
		sleep(1);
	}
	printf("rrr sleepy: ok\n");
	return 0;
}
