using Lasp2.Cli.Commands;
using Spectre.Console.Cli;

// `lasp2`: a thin front over the library. Each command lives in Commands/ and calls Lasp2.Research.
if (Lasp2.Cli.StartupHeap.RunRestarted(args) is int restarted) return restarted;
var app = new CommandApp();
app.Configure(config =>
{
    config.SetApplicationName("lasp2");
    config.AddCommand<VerifyCommand>("verify")
          .WithDescription("Check every form and method against the single-device reference; exits non-zero on any failure.");
    config.AddCommand<BenchCommand>("bench")
          .WithDescription("Benchmark every method against the measured matmul peak; CSV and HTML charts in data/.");
    config.AddCommand<LaunchCommand>("launch")
          .WithDescription("Run a lasp2 command as an N-rank MPI job: lasp2 launch -n 4 -- comm-selftest");
    config.AddCommand<CommSelfTestCommand>("comm-selftest").IsHidden();
    config.AddCommand<CommBenchCommand>("comm-bench").IsHidden();
    config.AddCommand<TimeLayerCommand>("time-layer").IsHidden()
          .WithDescription("Time one layer fwd+bwd: a method on W in-process ranks vs the single-device chunked kernel.");
});
return app.Run(args);
