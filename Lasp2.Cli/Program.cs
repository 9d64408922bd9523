using Lasp2.Cli;

// `lasp2`: a thin front over the library. Each command lives in Commands/ and calls Lasp2.Research; Lasp2App registers them.
return Lasp2App.Run(args);
