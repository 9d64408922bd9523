using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>libtorch loads on this machine (the build's GLIBCXX fix, see environment.md) and computes.</summary>
public class TorchLoadsTests
{
    [Fact]
    public void TorchLoadsAndComputesMatmulAndAutograd()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new double[] { 1, 2, 3, 4 }, dtype: float64).view(2, 2).requires_grad_(true);
        var b = tensor(new double[] { 5, 6, 7, 8 }, dtype: float64).view(2, 2);
        var product = a.matmul(b);
        Assert.Equal(new double[] { 19, 22, 43, 50 }, product.data<double>().ToArray());
        product.sum().backward();
        // d/da sum(a b) = 1 b^T: each row of the gradient holds the row sums of b.
        Assert.Equal(new double[] { 11, 15, 11, 15 }, a.grad!.data<double>().ToArray());
    }
}
