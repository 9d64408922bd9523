namespace Lasp2.Research.Comm;

/// <summary>Bytes one rank puts on the wire (<see cref="Sent"/>) and takes off it (<see cref="Received"/>).</summary>
public readonly record struct CommBytes(long Sent, long Received);

/// <summary>
/// The accounting convention shared by every backend: bytes are counted as a ring algorithm moves
/// them, whatever the backend really does underneath (MPI picks its own algorithms; the in-process
/// backend copies memory). The figures are exact integers, depend only on the world size, the rank
/// and the tensor sizes, and are identical for the in-process and the MPI backend, so a method's
/// communication volume can be asserted against the communication table in docs/algorithms.md.
/// With W = 1 every collective moves 0 bytes; a message a rank sends to itself moves 0 bytes.
/// </summary>
public static class CommVolume
{
    /// <summary>
    /// AllGather of <paramref name="bytesPerRank"/> (S) from every rank: a ring passes W-1 blocks on,
    /// so each rank sends (W-1) S and receives (W-1) S.
    /// </summary>
    public static CommBytes AllGather(int worldSize, long bytesPerRank) =>
        Symmetric(CheckWorld(worldSize) - 1L, bytesPerRank);

    /// <summary>
    /// ReduceScatter of an input of W blocks of S bytes (<paramref name="inputBytes"/> = W S): a ring
    /// passes W-1 partial sums on, so each rank sends (W-1) S and receives (W-1) S.
    /// </summary>
    public static CommBytes ReduceScatter(int worldSize, long inputBytes) =>
        Symmetric(CheckWorld(worldSize) - 1L, inputBytes / worldSize);

    /// <summary>
    /// AllReduce of <paramref name="bytes"/> (B): ring reduce-scatter then ring all-gather of B/W
    /// chunks, 2 (W-1)/W B each way, computed as floor(2 (W-1) B / W) (exact when W divides B).
    /// </summary>
    public static CommBytes AllReduce(int worldSize, long bytes)
    {
        long moved = 2L * (CheckWorld(worldSize) - 1) * bytes / worldSize;
        return new CommBytes(moved, moved);
    }

    /// <summary>
    /// AllToAll of an input of <paramref name="bytes"/> (B) split into W equal blocks: the W-1 blocks
    /// for other ranks leave, W-1 blocks arrive: (W-1)/W B each way.
    /// </summary>
    public static CommBytes AllToAll(int worldSize, long bytes) =>
        Symmetric(CheckWorld(worldSize) - 1L, bytes / worldSize);

    /// <summary>
    /// Broadcast of <paramref name="bytes"/> (B) from <paramref name="root"/> along the ring
    /// root, root+1, ..., root-1 (a pipelined chain): every rank except the root receives B; every rank
    /// except the last one of the chain, (root + W - 1) mod W, sends B. In total (W-1) B each way.
    /// </summary>
    public static CommBytes Broadcast(int worldSize, int rank, int root, long bytes)
    {
        CheckWorld(worldSize);
        if (worldSize == 1) return new CommBytes(0, 0);
        int last = (root + worldSize - 1) % worldSize;
        return new CommBytes(rank == last ? 0 : bytes, rank == root ? 0 : bytes);
    }

    /// <summary>Send of <paramref name="bytes"/> to <paramref name="destination"/>: B sent (0 to itself).</summary>
    public static CommBytes Send(int rank, int destination, long bytes) => new(rank == destination ? 0 : bytes, 0);

    /// <summary>Recv of <paramref name="bytes"/> from <paramref name="source"/>: B received (0 from itself).</summary>
    public static CommBytes Recv(int rank, int source, long bytes) => new(0, rank == source ? 0 : bytes);

    /// <summary>SendRecv (one ring step) of <paramref name="bytes"/>: the Send and the Recv parts added.</summary>
    public static CommBytes SendRecv(int rank, int destination, int source, long bytes) =>
        new(Send(rank, destination, bytes).Sent, Recv(rank, source, bytes).Received);

    static CommBytes Symmetric(long blocks, long blockBytes) => new(blocks * blockBytes, blocks * blockBytes);

    static int CheckWorld(int worldSize) => worldSize >= 1
        ? worldSize
        : throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "worldSize must be >= 1.");
}
