/* tidegate-worker-replay: `tidegate-worker replay` as a program of its own (replay.h). */
#include "replay.h"

int main(int argc, char **argv)
{
    return tg_worker_replay_main(argc, argv);
}
