using Lasp2.Cli;

// `lasp2`: a thin front over the library. Each command lives in Commands/ and calls Lasp2.Research; Lasp2App registers them.
// The allocator's start-up settings first: the process starts itself again with them when they are not set (StartupHeap).
if (StartupHeap.RunRestarted(args) is int restarted) return restarted;
return Lasp2App.Run(args);
