// jetserve's subcommands. Each parses its own flags from argv[2..] and returns the process exit
// code: 0 on success, 1 on a runtime error, 2 on a usage error (message on stderr).
#ifndef JETSERVE_SERVER_COMMANDS_H_
#define JETSERVE_SERVER_COMMANDS_H_

namespace jetserve {

int RunMakeCheckpoint(int argc, char** argv);
int RunTokenize(int argc, char** argv);
int RunGenerate(int argc, char** argv);
int RunServe(int argc, char** argv);       // serve_command.cc
int RunClient(int argc, char** argv);      // client_command.cc
int RunBench(int argc, char** argv);       // bench_command.cc
int RunBenchServe(int argc, char** argv);  // bench_serve_command.cc

}  // namespace jetserve

#endif  // JETSERVE_SERVER_COMMANDS_H_
