using Lasp2.Reference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>Every bad input throws the documented exception, naming the parameter and what is allowed.</summary>
public class GuardTests
{
    static Tensor T(params long[] shape) => zeros(shape, dtype: float64);

    static void Throws<TException>(string parameter, string messagePart, Action action) where TException : ArgumentException
    {
        var e = Assert.Throws<TException>(action);
        Assert.Equal(parameter, e.ParamName);
        Assert.Contains(messagePart, e.Message);
    }

    public static TheoryData<string, string, Action> LinearBadInputs => new()
    {
        { "q", "must be 4-D", () => LinearAttention.Quadratic(T(2, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4)) },
        { "k", "d_k differs", () => LinearAttention.Chunked(T(1, 2, 8, 4), T(1, 2, 8, 5), T(1, 2, 8, 4), 4) },
        { "k", "sequence lengths differ", () => LinearAttention.Recurrent(T(1, 2, 8, 4), T(1, 2, 7, 4), T(1, 2, 7, 4)) },
        { "k", "batch sizes differ", () => LinearAttention.RightProduct(T(1, 2, 8, 4), T(2, 2, 8, 4), T(2, 2, 8, 4)) },
        { "k", "equal head counts", () => LinearAttention.Quadratic(T(1, 4, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4)) },
        { "v", "heads", () => LinearAttention.Quadratic(T(1, 2, 8, 4), T(1, 2, 8, 4), T(1, 1, 8, 4)) },
        { "k", "dtype", () => LinearAttention.Quadratic(T(1, 2, 8, 4), zeros(1, 2, 8, 4, dtype: float32), T(1, 2, 8, 4)) },
        { "q", "floating point", () => LinearAttention.Quadratic(zeros(1, 2, 8, 4, dtype: int64), T(1, 2, 8, 4), T(1, 2, 8, 4)) },
        { "decay", "one lambda per head", () => LinearAttention.Quadratic(T(1, 2, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4), decay: [0.9]) },
        { "decay", "requires the causal mask", () => LinearAttention.Chunked(T(1, 1, 8, 4), T(1, 1, 8, 4), T(1, 1, 8, 4), 4, causal: false, decay: [0.9]) },
        { "k", "not a multiple of the 2 KV heads", () => SoftmaxAttention.Forward(T(1, 3, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4)) },
        { "keyPositions", "or neither", () => SoftmaxAttention.Forward(T(1, 2, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4), queryPositions: arange(8)) },
    };

    [Theory, MemberData(nameof(LinearBadInputs))]
    public void BadShapesAndDtypesThrowArgumentException(string parameter, string messagePart, Action action) =>
        Throws<ArgumentException>(parameter, messagePart, action);

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.5)]
    [InlineData(1.0000001)]
    [InlineData(double.NaN)]
    public void DecayOutsideZeroOneThrowsOutOfRange(double lambda) =>
        Throws<ArgumentOutOfRangeException>("decay", "outside (0, 1]",
            () => LinearAttention.Recurrent(T(1, 2, 8, 4), T(1, 2, 8, 4), T(1, 2, 8, 4), decay: [0.9, lambda]));

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void BlockSizeBelowOneThrowsOutOfRange(int blockSize) =>
        Throws<ArgumentOutOfRangeException>("blockSize", ">= 1",
            () => LinearAttention.Chunked(T(1, 1, 8, 4), T(1, 1, 8, 4), T(1, 1, 8, 4), blockSize));

    [Fact]
    public void DeviceMixIsRejectedBeforeAnyComputation()
    {
        // Only the CPU exists here; a meta-device tensor stands in for "another device".
        var meta = empty([1, 1, 8, 4], dtype: float64, device: new Device(DeviceType.META));
        Throws<ArgumentException>("k", "device", () => LinearAttention.Quadratic(T(1, 1, 8, 4), meta, T(1, 1, 8, 4)));
    }

    [Theory]
    [InlineData(10, 4, Layout.Contiguous, "not divisible by worldSize = 4")]
    [InlineData(12, 4, Layout.Zigzag, "not divisible by 2 * worldSize = 8")]
    public void IndivisibleSequenceThrows(int n, int worldSize, Layout layout, string messagePart) =>
        Throws<ArgumentException>("n", messagePart, () => SequenceLayout.Shard(T(1, 1, n, 2), worldSize, layout));

    [Fact]
    public void WorldSizeBelowOneThrowsOutOfRange() =>
        Throws<ArgumentOutOfRangeException>("worldSize", ">= 1", () => SequenceLayout.Shard(T(1, 1, 8, 2), 0, Layout.Contiguous));

    [Fact]
    public void UnequalShardsAreRejected() =>
        Throws<ArgumentException>("shards", "must be equal",
            () => SequenceLayout.Unshard([T(1, 1, 4, 2), T(1, 1, 3, 2)], Layout.Contiguous));
}
