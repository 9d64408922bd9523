namespace Lasp2.Research.Attention;

/// <summary>
/// Every sequence-parallel method by its registry name (what `lasp2 verify --method` and `lasp2 bench` take).
/// To add a method, write one file implementing <see cref="ISequenceParallelAttention"/> (its capabilities,
/// FLOP algorithm and communication prediction live there) and add one line to <see cref="Methods"/>: the
/// equality and communication properties, `lasp2 verify` and `lasp2 bench` iterate the registry.
/// </summary>
public static class MethodRegistry
{
    static readonly Dictionary<string, ISequenceParallelAttention> Methods =
        new ISequenceParallelAttention[]
        {
            new Lasp2Attention(),
            new Lasp2Affine(),
            new AllScan(),
            new Lasp1Ring(),
            new RingAttention(AttentionKind.Linear),
            new RingAttention(AttentionKind.Softmax),
            new AllGatherContextParallel(),
            new Ulysses(AttentionKind.Linear),
            new Ulysses(AttentionKind.Softmax),
        }.ToDictionary(m => m.Name, StringComparer.OrdinalIgnoreCase);

    /// <summary>Registered names, sorted.</summary>
    public static IReadOnlyList<string> Names => Methods.Keys.Order(StringComparer.Ordinal).ToList();

    /// <summary>All registered methods, by name.</summary>
    public static IReadOnlyList<ISequenceParallelAttention> All => Names.Select(n => Methods[n]).ToList();

    /// <summary>The method called <paramref name="name"/> (case-insensitive); throws naming the known ones otherwise.</summary>
    public static ISequenceParallelAttention Get(string name) =>
        Methods.TryGetValue(name ?? throw new ArgumentNullException(nameof(name)), out var method)
            ? method
            : throw new ArgumentException($"unknown method '{name}'; known: {string.Join(", ", Names)}.", nameof(name));
}
