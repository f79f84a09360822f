/* rrr example: a flaky reproducer. On the crash-test kernel (`rrr kernel --fragment
 * crash-test`) it provokes a kernel WARNING through LKDTM, but only on attempt 3
 * (`rrr record --attempts 5` runs it from the ready snapshot until it crashes). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

int main(void)
{
	const char *attempt = getenv("RRR_ATTEMPT");
	printf("rrr example: attempt %s\n", attempt ? attempt : "(none)");
	if (!attempt || strcmp(attempt, "3") != 0)
		return 0;
	/* Already mounted is fine. */
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	int fd = open("/sys/kernel/debug/provoke-crash/DIRECT", O_WRONLY);
	if (fd < 0) {
		perror("provoke-crash/DIRECT (a kernel with LKDTM: rrr kernel --fragment crash-test)");
		return 1;
	}
	if (write(fd, "WARNING\n", 8) < 0)
		perror("write");
	close(fd);
	return 0;
}
