/* rrr example: a reproducer's shape that never ends: a loop that forks a child per
 * iteration, which writes to a pipe its parent reads, then waits for it (as syzkaller's
 * `repeat` loops do). Traces of it grow with every second recorded. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	for (unsigned long i = 0;; i++) {
		int fds[2];
		char buf[16];
		if (pipe(fds) < 0) {
			perror("pipe");
			return 1;
		}
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			close(fds[0]);
			if (write(fds[1], "rrr-iteration", 13) < 0)
				_exit(1);
			_exit(0);
		}
		close(fds[1]);
		while (read(fds[0], buf, sizeof(buf)) > 0)
			;
		close(fds[0]);
		waitpid(pid, NULL, 0);
	}
}
