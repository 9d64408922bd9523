using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// One global training batch: <see cref="Inputs"/> [B, N] token ids, <see cref="Targets"/> [B, N] the next token
/// of each (or <see cref="LinearLlama.NoTarget"/>: the last token of a document predicts nothing), and
/// <see cref="DocumentStarts"/>, per row, the offsets where packed documents begin (cu_seqlens without the end).
/// Every rank holds the whole batch and takes its rows (data parallel) and its sequence shard (sequence parallel).
/// A model that keeps documents apart (<see cref="ModelConfig.SeparateDocuments"/>) takes them from <see cref="Documents"/>.
/// </summary>
public sealed record Batch(Tensor Inputs, Tensor Targets, IReadOnlyList<long[]> DocumentStarts) : IDisposable
{
    /// <summary>Sequences B.</summary>
    public long Rows => Inputs.shape[0];

    /// <summary>Sequence length N.</summary>
    public long Length => Inputs.shape[1];

    /// <summary>
    /// The packed documents of rows [<paramref name="firstRow"/>, <paramref name="firstRow"/> + <paramref name="rows"/>),
    /// one <see cref="DocumentBoundaries"/> per row over its N tokens. A row that starts inside a document has its tail
    /// as its first document (the document's head was in the previous window, and no attention reaches across windows).
    /// </summary>
    public IReadOnlyList<DocumentBoundaries> Documents(long firstRow, long rows) =>
        Enumerable.Range((int)firstRow, (int)rows).Select(r =>
        {
            var starts = DocumentStarts[r];
            long[] cuSeqlens = [.. starts.Length > 0 && starts[0] == 0 ? [] : new long[] { 0 }, .. starts, Length];
            return DocumentBoundaries.FromCuSeqlens(cuSeqlens, Length);
        }).ToList();

    /// <summary>Tokens with a target, over the whole batch: the denominator of the loss.</summary>
    public long TargetCount
    {
        get
        {
            long count = 0;
            foreach (long target in Targets.data<long>()) if (target != LinearLlama.NoTarget) count++;
            return count;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Inputs.Dispose();
        Targets.Dispose();
    }
}

/// <summary>A deterministic stream of batches: the batch of a step depends only on the step (so a resumed run sees the same data).</summary>
public interface IBatchSource
{
    /// <summary>Vocabulary size of the ids it produces.</summary>
    int Vocab { get; }

    /// <summary>The global batch of 0-based step <paramref name="step"/>; owned by the caller.</summary>
    Batch Get(long step);
}
