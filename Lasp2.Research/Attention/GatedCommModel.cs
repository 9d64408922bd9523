using Lasp2.Reference;

namespace Lasp2.Research.Attention;

/// <summary>
/// The communication model of a (method, recurrence) pair: the affine-summary methods predict from the recurrence's
/// transition size; every other method runs only the constant decay, which <see cref="CommModel"/> covers.
/// </summary>
public static class GatedCommModel
{
    /// <summary>The prediction for <paramref name="method"/> running <paramref name="recurrence"/> on <paramref name="rank"/>.</summary>
    public static CommPrediction Predict(string method, CommShape shape, Recurrence recurrence, int rank) =>
        MethodRegistry.Get(method) switch
        {
            Lasp2Affine => Lasp2Affine.Predict(shape, recurrence, rank),
            AllScan allScan => allScan.Predict(shape, rank),
            var other when recurrence == Recurrence.Decay => CommModel.Predict(other.Name, shape, rank),
            var other => throw new ArgumentException($"{other.Name} does not run the {recurrence.Name} recurrence.", nameof(method)),
        };
}
