namespace Lasp2.Research.Model;

/// <summary>
/// Linear warm-up then cosine decay: lr(s) = peak (s + 1) / warmup for s &lt; warmup, else
/// min + (peak - min) (1 + cos(pi (s - warmup) / (total - warmup))) / 2, with s the 0-based step.
/// </summary>
/// <param name="Peak">Peak learning rate (&gt; 0).</param>
/// <param name="Minimum">Final learning rate (0 &lt;= Minimum &lt;= Peak).</param>
/// <param name="WarmupSteps">Warm-up steps (&gt;= 0).</param>
/// <param name="TotalSteps">Steps of the whole schedule (&gt;= 1).</param>
public sealed record LearningRate(double Peak, double Minimum, int WarmupSteps, int TotalSteps)
{
    /// <summary>The rate of 0-based step <paramref name="step"/>.</summary>
    public double At(long step)
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps));
        return Minimum + (Peak - Minimum) * (1 + Math.Cos(Math.PI * progress)) / 2;
    }

    /// <summary>Throws naming the first field outside its range; returns this.</summary>
    public LearningRate Validate()
    {
        if (!(Peak > 0)) throw new ArgumentOutOfRangeException(nameof(Peak), Peak, "the learning rate must be > 0.");
        if (!(Minimum >= 0 && Minimum <= Peak)) throw new ArgumentOutOfRangeException(nameof(Minimum), Minimum, $"the final learning rate must be in [0, {Peak}].");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "warm-up steps must be >= 0.");
        if (TotalSteps < 1) throw new ArgumentOutOfRangeException(nameof(TotalSteps), TotalSteps, "total steps must be >= 1.");
        return this;
    }
}
