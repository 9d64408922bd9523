namespace Lasp2.Research.Comm;

/// <summary>A collective could not complete: mismatched calls, shapes or dtypes across ranks, or a rank that left.</summary>
public class CommException : Exception
{
    public CommException(string message) : base(message) { }
    public CommException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A collective waited longer than the group's timeout; the message names it and the ranks that did not arrive.</summary>
public sealed class CommTimeoutException : CommException
{
    public CommTimeoutException(string message) : base(message) { }
}

/// <summary>A wait was cancelled because another rank failed first (that rank's error is the one reported).</summary>
public sealed class CommAbortedException : CommException
{
    public CommAbortedException(string message) : base(message) { }
}

/// <summary>
/// The one exception <see cref="ProcessGroups.RunInProcess{T}"/> throws when a rank fails: it names the
/// first rank that failed, and <see cref="Exception.InnerException"/> is that rank's original error.
/// </summary>
public sealed class RankFailedException : Exception
{
    public RankFailedException(int rank, int worldSize, Exception error)
        : base($"rank {rank} of {worldSize} failed: {error.GetType().Name}: {error.Message}", error)
    {
        Rank = rank;
        WorldSize = worldSize;
    }

    /// <summary>The rank (in the world group) whose error stopped the run.</summary>
    public int Rank { get; }

    /// <summary>Number of ranks in the run.</summary>
    public int WorldSize { get; }
}
