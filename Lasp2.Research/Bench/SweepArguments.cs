using System.Globalization;
using static TorchSharp.torch;

namespace Lasp2.Research.Bench;

/// <summary>Parses the list options of `lasp2 bench`; each throws <see cref="ArgumentException"/> naming the option and the valid form.</summary>
public static class SweepArguments
{
    /// <summary>"a,b, c" -> [a, b, c] (empty items dropped).</summary>
    public static List<string> List(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    /// <summary>
    /// Sequence lengths: a list ("1K,3000,2M") or a doubling range ("1K..64K"); K = 1024, M = 1048576.
    /// Every length must be &gt;= 1.
    /// </summary>
    public static List<long> Lengths(string text)
    {
        var range = text.Split("..", StringSplitOptions.TrimEntries);
        if (range.Length == 2)
        {
            long from = Length(range[0]), to = Length(range[1]);
            if (to < from) throw new ArgumentException($"--seq range '{text}' ends below its start.", nameof(text));
            var lengths = new List<long>();
            for (long n = from; n <= to; n *= 2) lengths.Add(n);
            return lengths;
        }
        var list = List(text).Select(Length).ToList();
        return list.Count > 0 ? list : throw new ArgumentException("--seq needs at least one length.", nameof(text));
    }

    /// <summary>A comma-separated list of integers &gt;= 1 for <paramref name="option"/>.</summary>
    public static List<int> Integers(string text, string option)
    {
        var values = List(text).Select(item => int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= 1
            ? v : throw new ArgumentException($"{option} takes integers >= 1; got '{item}'.", nameof(text))).ToList();
        return values.Count > 0 ? values : throw new ArgumentException($"{option} needs at least one value.", nameof(text));
    }

    /// <summary>"causal", "none" or "both" (comma-separated) -> causal flags.</summary>
    public static List<bool> Masks(string text) => List(text).SelectMany(item => item switch
    {
        "causal" => new[] { true },
        "none" => [false],
        "both" => [true, false],
        _ => throw new ArgumentException($"--mask takes causal, none or both; got '{item}'.", nameof(text)),
    }).Distinct().ToList();

    /// <summary>"float32" / "float64" (comma-separated) -> dtypes.</summary>
    public static List<ScalarType> Dtypes(string text) => List(text).Select(item => item switch
    {
        "float32" => ScalarType.Float32,
        "float64" => ScalarType.Float64,
        _ => throw new ArgumentException($"--dtype takes float32 or float64; got '{item}'.", nameof(text)),
    }).Distinct().ToList();

    static long Length(string item)
    {
        long unit = item.EndsWith('K') ? 1024 : item.EndsWith('M') ? 1 << 20 : 1;
        var digits = unit == 1 ? item : item[..^1];
        return long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n >= 1
            ? n * unit
            : throw new ArgumentException($"--seq lengths are integers >= 1 with an optional K or M suffix; got '{item}'.", nameof(item));
    }
}
