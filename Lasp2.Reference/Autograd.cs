using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>Output and input gradients of a function, for equivalence checks of backward passes.</summary>
public static class Autograd
{
    /// <summary>
    /// Runs <paramref name="function"/> on detached copies of <paramref name="inputs"/> that require grad,
    /// back-propagates the cotangent <paramref name="outputGrad"/> (dO) and returns the detached output and
    /// one gradient per input (zeros where an input does not influence the output).
    /// </summary>
    public static (Tensor Output, Tensor[] Grads) ForwardBackward(
        Func<Tensor[], Tensor> function, Tensor outputGrad, params Tensor[] inputs)
    {
        using var scope = NewDisposeScope();
        var leaves = inputs.Select(x => x.detach().clone().requires_grad_(true)).ToArray();
        var output = function(leaves);
        output.backward([outputGrad]);
        var grads = leaves.Select(l => (l.grad is { } g ? g.detach().clone() : zeros_like(l)).MoveToOuterDisposeScope()).ToArray();
        return (output.detach().MoveToOuterDisposeScope(), grads);
    }
}
