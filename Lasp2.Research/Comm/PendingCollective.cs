using System.Diagnostics;
using System.Runtime.ExceptionServices;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// The handle both backends return for an asynchronous collective. <see cref="Wait"/> finishes the
/// collective once, records it in <see cref="CommStats"/> (bytes by <see cref="CommVolume"/>, waiting
/// time = time blocked in Wait) and returns the same tensor (or rethrows the same error) on later calls.
/// A blocking collective is the same handle finished at once, its waiting time measured from the call.
/// </summary>
sealed class PendingCollective(string kind, CommBytes bytes, CommStats stats, Func<bool> isDone, Func<Tensor> finish)
    : ICommHandle
{
    readonly object gate = new();
    Tensor? result;
    ExceptionDispatchInfo? error;

    public bool IsCompleted
    {
        get { lock (gate) return result is not null || error is not null || isDone(); }
    }

    public Tensor Wait() => Finish(Stopwatch.GetTimestamp());

    /// <summary>Finishes the collective, counting the waiting time from <paramref name="startedAt"/> (a Stopwatch timestamp).</summary>
    public Tensor Finish(long startedAt)
    {
        lock (gate)
        {
            error?.Throw();
            if (result is not null) return result;
            try
            {
                result = finish();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
                throw;
            }
            stats.Record(kind, bytes.Sent, bytes.Received, Stopwatch.GetElapsedTime(startedAt));
            return result;
        }
    }
}
