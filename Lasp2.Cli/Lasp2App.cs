using System.Reflection;
using Lasp2.Cli.Commands;
using Lasp2.Reference;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Lasp2.Cli;

/// <summary>
/// The `lasp2` command line: the registered commands, strict parsing (an unknown option is an error), and
/// every error as one line on stderr with a non-zero exit code (2 for bad input, 1 for a failure while running).
/// </summary>
public static class Lasp2App
{
    /// <summary>A registered command: its name, its type (whose settings declare the options), its help text.</summary>
    public sealed record Entry(string Name, Type Command, string Description, bool Hidden)
    {
        /// <summary>The settings type of <see cref="Command"/> (the T of Command&lt;T&gt;).</summary>
        public Type Settings => Command.BaseType!.GetGenericArguments()[0];

        /// <summary>The options of the command: long names (with "--") or the short name, and the property behind each.</summary>
        public IEnumerable<(string Name, PropertyInfo Property)> Options() =>
            from property in Settings.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            let option = property.GetCustomAttribute<CommandOptionAttribute>()
            where option is not null
            from name in option.LongNames.Select(n => "--" + n).Concat(option.ShortNames.Select(n => "-" + n))
            select (name, property);
    }

    /// <summary>Every command of `lasp2`; the help tests iterate this list.</summary>
    public static IReadOnlyList<Entry> Commands { get; } =
    [
        new("verify", typeof(VerifyCommand), "Check every form and method against the single-device reference; exits non-zero on any failure.", false),
        new("bench", typeof(BenchCommand), "Benchmark every method against the measured matmul peak; CSV and HTML charts in data/.", false),
        new("train", typeof(TrainCommand), "Train a Linear-Llama3 hybrid (e.g. --pattern LLLN) sequence x data parallel on Debian's fortunes; CSV log, chart, checkpoint.", false),
        new("hybrid-report", typeof(HybridReportCommand), "The hybrid-ratio study (data/run-hybrid-study.sh): held-out loss per pattern next to the paper's Table 2, and charts.", false),
        new("simulate", typeof(SimulateCommand), "Predict iteration time, exposed communication, bytes per link and memory of each method on a modelled cluster (up to 128 ranks).", false),
        new("simulate-check", typeof(SimulateCheckCommand), "Check the cluster model against this machine's measured MPI bench runs (error per method).", false),
        new("simulate-paper", typeof(SimulatePaperCommand), "The paper's Fig. 3, Table 5 and Table 6 predicted next to the published numbers, and the fastest method over (N, W, network).", false),
        new("launch", typeof(LaunchCommand), "Run a lasp2 command as an N-rank MPI job: lasp2 launch -n 4 -- comm-selftest", false),
        new("comm-selftest", typeof(CommSelfTestCommand), "Check every collective on every rank (MPI job or --in-process N threads).", true),
        new("comm-bench", typeof(CommBenchCommand), "Median AllGather latency of a 16 KiB state and of 16 MiB per rank.", true),
        new("time-layer", typeof(TimeLayerCommand), "Time one layer fwd+bwd: a method on W in-process ranks vs the single-device chunked kernel.", true),
        new("scalar-stress", typeof(ScalarStressCommand), "Softmax methods at W = 8, masked fills and unscoped AllGather-CP ranks under forced garbage collections (run with DOTNET_TieredCompilation=0).", true),
    ];

    /// <summary>
    /// Runs `lasp2 <paramref name="args"/>`. Help and command output go to <paramref name="console"/> (default: the
    /// terminal), errors to <paramref name="errors"/> (default: stderr).
    /// </summary>
    public static int Run(string[] args, IAnsiConsole? console = null, TextWriter? errors = null)
    {
        errors ??= Console.Error;
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.SetApplicationName("lasp2");
            config.UseStrictParsing();
            if (console is not null) config.ConfigureConsole(console);
            config.SetExceptionHandler((error, _) =>
            {
                errors.WriteLine("error: " + Describe(error, args));
                return error is CommandAppException or ArgumentException ? 2 : 1;
            });
            var add = typeof(IConfigurator).GetMethod(nameof(IConfigurator.AddCommand))!;
            foreach (var entry in Commands)
            {
                var command = (ICommandConfigurator)add.MakeGenericMethod(entry.Command).Invoke(config, [entry.Name])!;
                command.WithDescription(entry.Description);
                if (entry.Hidden) command.IsHidden();
            }
        });
        return app.Run(args);
    }

    /// <summary>Runs a command's option checks (Guards and friends); an <see cref="ArgumentException"/> becomes its one-line message.</summary>
    public static ValidationResult Validate(Action checks)
    {
        try
        {
            checks();
            return ValidationResult.Success();
        }
        catch (ArgumentException error)
        {
            return ValidationResult.Error(OneLine(error));
        }
    }

    /// <summary>The first line of an exception's message, without .NET's "(Parameter 'x')" suffix.</summary>
    public static string OneLine(Exception error)
    {
        while (error is AggregateException or TargetInvocationException && error.InnerException is not null)
            error = error.InnerException;
        string line = error.Message.Split('\n')[0].TrimEnd();
        if (error is ArgumentException { ParamName: { } name }) line = line.Replace($" (Parameter '{name}')", "");
        return line;
    }

    /// <summary>
    /// One line for any error. Spectre reports a value that does not convert as "Failed to convert 'x' to Int32.";
    /// this names the option and its range instead.
    /// </summary>
    static string Describe(Exception error, string[] args)
    {
        if (error is CommandAppException && error.Message.StartsWith("Failed to convert '", StringComparison.Ordinal)
            && BadValue(args) is var (option, value, property))
        {
            var range = property.GetCustomAttribute<OptionRangeAttribute>();
            var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            string kind = type == typeof(double) ? "a number" : "an integer";
            return value is null
                ? $"{option} needs a value: {kind}{(range is null ? "" : " that " + range.Text)}."
                : $"{option} = '{value}' is not {kind}{(range is null ? "" : "; it " + range.Text)}.";
        }
        if (error is CommandAppException && error.Message.StartsWith("Flags cannot be assigned a value", StringComparison.Ordinal)
            && args.FirstOrDefault(a => a.StartsWith("--", StringComparison.Ordinal) && a.Contains('=')) is { } flag)
            return $"{flag.Split('=')[0]} is a flag and takes no value; got '{flag}'.";
        if (error is CommandParseException && error.Message.StartsWith("Unknown command", StringComparison.Ordinal))
            return OneLine(error) + $" Commands: {string.Join(", ", Commands.Select(c => c.Name))}.";
        return OneLine(error);
    }

    /// <summary>
    /// The option of the invoked command whose value did not convert: the first "--opt value" or "--opt=value" pair
    /// that fails, or a numeric option with no value (last, or followed by another option; Value null).
    /// </summary>
    static (string Option, string? Value, PropertyInfo Property)? BadValue(string[] args)
    {
        var entry = Commands.FirstOrDefault(c => args.Length > 0 && c.Name == args[0]);
        if (entry is null) return null;
        var options = entry.Options().ToDictionary(o => o.Name, o => o.Property);
        for (int i = 1; i < args.Length; i++)
        {
            var parts = args[i].Split('=', 2);
            string name = parts[0];
            if (!options.TryGetValue(name, out var property)) continue;
            var type = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            if (type == typeof(string) || type == typeof(bool)) continue;
            string? value = parts.Length == 2 ? parts[1] : i + 1 < args.Length ? args[i + 1] : null;
            if (value is null || (parts.Length == 1 && options.ContainsKey(value))) return (name, null, property);
            bool converts = type == typeof(double)
                ? double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _)
                : type == typeof(long) ? long.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _)
                : int.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _);
            if (!converts) return (name, value, property);
        }
        return null;
    }
}

/// <summary>
/// The valid range of a numeric option, checked with <see cref="Guards.InRange"/> after parsing and named in the
/// error when the value is not a number at all.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class OptionRangeAttribute(double minimum, double maximum = double.PositiveInfinity) : ParameterValidationAttribute(errorMessage: "")
{
    /// <summary>True for an open lower bound, e.g. (0, 1] or &gt; 0.</summary>
    public bool MinimumExclusive { get; init; }

    /// <summary>"must be &gt;= 1", "must be in (0, 1]".</summary>
    public string Text => "must be " + Guards.RangeText(minimum, maximum, MinimumExclusive);

    public override ValidationResult Validate(CommandParameterContext context)
    {
        if (context.Value is null) return ValidationResult.Success();                    // an optional option left out
        string name = context.Parameter is Spectre.Console.Cli.Help.ICommandOption option
            ? option.LongNames.Select(n => "--" + n).Concat(option.ShortNames.Select(n => "-" + n)).First()
            : context.Parameter.PropertyName;
        return Lasp2App.Validate(() => Guards.InRange(Convert.ToDouble(context.Value, System.Globalization.CultureInfo.InvariantCulture),
            minimum, maximum, name, MinimumExclusive));
    }
}
