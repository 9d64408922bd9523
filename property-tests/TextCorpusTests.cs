using Lasp2.Research.Model;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>The committed fortunes sample through the GPT-2 tokenizer, the derived vocabulary and the packing.</summary>
public class TextCorpusTests
{
    static readonly string Sample = Path.Combine(CheckpointTests.RepoRoot(), "data", "fortunes-sample.txt");

    [Fact]
    public void TheSampleTokenizesIntoPackedDocumentsWithAHeldOutSplit()
    {
        var documents = TextCorpus.ReadFortunes(Sample);
        Assert.Equal(300, documents.Count);
        var corpus = TextCorpus.Build(documents, vocabSize: 256);
        Assert.Equal(256, corpus.Vocabulary.Size);
        Assert.Equal(documents.Count / TextCorpus.HeldOutEvery, corpus.Validation.Starts.Length);
        Assert.Equal(documents.Count - corpus.Validation.Starts.Length, corpus.Train.Starts.Length);
        // every document ends with the end-of-document token, right before the next one starts
        foreach (var start in corpus.Train.Starts.Skip(1)) Assert.Equal(Vocabulary.EndOfDocument, corpus.Train.Tokens[start - 1]);
        Assert.Equal(Vocabulary.EndOfDocument, corpus.Train.Tokens[^1]);

        // the first training document (document 1; 0 is held out) opens the stream, and a training document whose
        // tokens are all kept decodes back to its text
        var tokenizer = TextCorpus.Gpt2();
        int[] Mapped(int i) => tokenizer.EncodeToIds(documents[i]).Select(corpus.Vocabulary.FromGpt2).ToArray();
        Assert.Equal(Mapped(1), corpus.Train.Tokens.Take(Mapped(1).Length).Select(t => (int)t));
        int kept = Enumerable.Range(0, documents.Count).First(i => i % TextCorpus.HeldOutEvery != 0 && Mapped(i).All(id => id != Vocabulary.Unknown));
        Assert.Equal(documents[kept], tokenizer.Decode(Mapped(kept).Select(id => corpus.Vocabulary.Gpt2Ids[id - 2])));
    }

    [Fact]
    public void TargetsStopAtDocumentEnds()
    {
        var corpus = TextCorpus.Build(TextCorpus.ReadFortunes(Sample), vocabSize: 128);
        using var batch = corpus.Batches(rows: 2, length: 64).Get(3);
        var inputs = batch.Inputs.data<long>().ToArray();
        var targets = batch.Targets.data<long>().ToArray();
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i] == Vocabulary.EndOfDocument) Assert.Equal(LinearLlama.NoTarget, targets[i]);
            else Assert.NotEqual(LinearLlama.NoTarget, targets[i]);
        for (int r = 0; r < 2; r++)
            foreach (var start in batch.DocumentStarts[r].Where(s => s > 0))
                Assert.Equal(Vocabulary.EndOfDocument, inputs[r * 64 + start - 1]);
        Assert.True(batch.TargetCount < inputs.Length);
        Assert.True(corpus.UnknownRate is > 0 and < 0.5, $"unknown rate {corpus.UnknownRate}");
    }
}
