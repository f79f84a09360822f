/* rrr example: a refcount_t warning (decrement hit 0) provoked from user space through the kernel's
 * LKDTM, on the crash-test kernel (`rrr kernel --fragment crash-test`): the stimulus writes
 * REFCOUNT_DEC_ZERO to /sys/kernel/debug/provoke-crash/DIRECT. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

int main(void)
{
	const char *what = "REFCOUNT_DEC_ZERO\n";
	/* Already mounted is fine. */
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	int fd = open("/sys/kernel/debug/provoke-crash/DIRECT", O_WRONLY);
	if (fd < 0) {
		perror("provoke-crash/DIRECT (a kernel with LKDTM: rrr kernel --fragment crash-test)");
		return 1;
	}
	if (write(fd, what, strlen(what)) < 0)
		perror("write");
	close(fd);
	return 0;
}
