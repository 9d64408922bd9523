using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli.Commands;

/// <summary>
/// `lasp2 launch -n N [--timeout S] [--hostfile F] -- &lt;lasp2 command&gt;`: runs the same lasp2 (apphost or
/// `dotnet lasp2.dll`) as an N-rank Open MPI job with the flags users otherwise forget: --allow-run-as-root
/// when root, --oversubscribe when N exceeds the cores, --timeout, TERM=dumb. Returns mpirun's exit code.
/// </summary>
public sealed class LaunchCommand : Command<LaunchCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("-n|--ranks <N>"), OptionRange(1), Description("Number of MPI ranks (>= 1).")]
        public int Ranks { get; init; } = 2;

        [CommandOption("--timeout <SECONDS>"), OptionRange(1), Description("mpirun --timeout: kill the whole job after this many seconds (>= 1). Default 3600.")]
        public int Timeout { get; init; } = 3600;

        [CommandOption("--hostfile <FILE>"), Description("Open MPI hostfile for a multi-machine job (see environment.md).")]
        public string? Hostfile { get; init; }

        [CommandOption("--dry-run"), Description("Print the mpirun command line instead of running it.")]
        public bool DryRun { get; init; }

        public override ValidationResult Validate() =>
            Hostfile is not null && !File.Exists(Hostfile) ? ValidationResult.Error($"--hostfile = '{Hostfile}' does not exist.")
            : ValidationResult.Success();
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var command = context.Remaining.Raw.ToList();
        if (command.Count == 0)
        {
            AnsiConsole.MarkupLine("[red]launch needs the lasp2 command to run after --, e.g. lasp2 launch -n 2 -- comm-selftest[/]");
            return 2;
        }
        var arguments = MpirunArguments(settings, Environment.ProcessorCount, Environment.IsPrivilegedProcess)
            .Concat(Self()).Concat(command).ToList();
        if (settings.DryRun)
        {
            Console.WriteLine("mpirun " + string.Join(" ", arguments));
            return 0;
        }
        var start = new ProcessStartInfo("mpirun") { UseShellExecute = false };
        arguments.ForEach(start.ArgumentList.Add);
        start.Environment["TERM"] = "dumb";
        try
        {
            using var job = Process.Start(start)!;
            job.WaitForExit();
            return job.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            AnsiConsole.MarkupLine("[red]mpirun not found: install Open MPI (apt-get install -y openmpi-bin).[/]");
            return 127;
        }
    }

    /// <summary>The mpirun flags, before the program: root, oversubscription, timeout, environment, ranks, hosts.</summary>
    internal static IEnumerable<string> MpirunArguments(Settings settings, int cores, bool root)
    {
        if (root) yield return "--allow-run-as-root";
        // With a hostfile the slots are the hosts' business; locally, more ranks than cores need permission.
        if (settings.Hostfile is null && settings.Ranks > cores) yield return "--oversubscribe";
        yield return "--timeout";
        yield return settings.Timeout.ToString(CultureInfo.InvariantCulture);
        // Exported to every rank, also on other machines.
        foreach (var variable in new[] { "TERM=dumb" }.Concat(ForwardedVariables()))
        {
            yield return "-x";
            yield return variable;
        }
        if (settings.Hostfile is not null)
        {
            yield return "--hostfile";
            yield return settings.Hostfile;
        }
        yield return "-n";
        yield return settings.Ranks.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>This lasp2: the apphost itself, or `dotnet path/lasp2.dll` when run through dotnet.</summary>
    static IEnumerable<string> Self()
    {
        string process = Environment.ProcessPath ?? "dotnet";
        string dll = typeof(LaunchCommand).Assembly.Location;
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? [process, dll] : [process];
    }

    /// <summary>LASP2_* settings (timeouts, checks) reach every rank.</summary>
    static IEnumerable<string> ForwardedVariables() =>
        Environment.GetEnvironmentVariables().Keys.Cast<string>()
            .Where(name => name.StartsWith("LASP2_", StringComparison.Ordinal)).Order(StringComparer.Ordinal);
}
