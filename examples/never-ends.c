/* A stimulus that never exits: rrr stops recording at its timeout and still traces the run. */
#include <unistd.h>

int main(void)
{
	for (;;) {
		getppid();
		usleep(100 * 1000);
	}
}
