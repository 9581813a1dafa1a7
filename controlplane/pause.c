/* The pod sandbox's pause process for the test node (controlplane/node.py): sleeps until
 * SIGINT/SIGTERM, reaps zombies (it is PID 1 of the pod), exits 0. Built with `gcc -static`. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) { puts("chorus-pause 1"); return 0; }
  struct sigaction term = {0}, chld = {0};
  term.sa_handler = stop;
  chld.sa_handler = reap;
  chld.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGINT, &term, NULL) || sigaction(SIGTERM, &term, NULL) || sigaction(SIGCHLD, &chld, NULL)) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) pause();
}
