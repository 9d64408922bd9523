using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Reference;

/// <summary>Feature maps phi applied to q and k before linear attention.</summary>
public enum FeatureMap
{
    /// <summary>phi(x) = x (basic linear attention, Lightning, Retention).</summary>
    Identity,
    /// <summary>phi(x) = elu(x) + 1 (Katharopoulos et al.), always positive.</summary>
    EluPlusOne,
    /// <summary>phi(x) = x * sigmoid(x) (SiLU / swish).</summary>
    Swish,
}

/// <summary>Applies a <see cref="FeatureMap"/>.</summary>
public static class FeatureMaps
{
    /// <summary>phi(x), elementwise, differentiable.</summary>
    public static Tensor Apply(this FeatureMap map, Tensor x) => map switch
    {
        FeatureMap.Identity => x.alias(),
        FeatureMap.EluPlusOne => x.Elu().Plus(1.0),
        FeatureMap.Swish => nn.functional.silu(x),
        _ => throw new ArgumentOutOfRangeException(nameof(map), map, "unknown feature map; use Identity, EluPlusOne or Swish."),
    };
}
