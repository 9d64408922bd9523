using System.Diagnostics;
using System.Text.Json;
using Lasp2.Reference;
using Lasp2.Research.Comm;
using Lasp2.Research.Model;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// Checkpoints outlive the run: Python reads them by the safetensors specification with NumPy alone and gets the
/// same values, and a run saved at SP 4 and resumed at SP 2 continues exactly like an uninterrupted run.
/// </summary>
public class CheckpointTests
{
    static readonly ModelConfig Config = new(24, 16, "LLLN", 4, 2, 24, BlockSize: 4);
    static TrainOptions Options => new(new LearningRate(3e-2, 3e-3, 1, 6), ClipNorm: 0.5, Seed: 4);
    static PackedCorpus Corpus => PackedCorpus.Random(24, 2048, 6, rows: 2, length: 16, seed: 9);

    [Fact]
    public void PythonReadsTheCheckpointWithNumPyOnly()
    {
        var directory = Directory.CreateTempSubdirectory("lasp2-checkpoint-").FullName;
        try
        {
            using var trainer = new Trainer(Config, Options, null);
            using (var batch = Corpus.Get(0)) trainer.TrainStep(batch);
            Checkpoint.Save(directory, trainer);
            foreach (var (file, expected) in new[]
            {
                ("model.safetensors", trainer.Parameters.Entries.ToList()),
                ("optimizer.safetensors", trainer.Parameters.Names.Select((n, i) => ("exp_avg." + n, trainer.Optimizer.First[i])).ToList()),
            })
            {
                var start = new ProcessStartInfo(Python, [Path.Combine(RepoRoot(), "tools", "read_safetensors.py"), Path.Combine(directory, file)])
                    { RedirectStandardOutput = true, RedirectStandardError = true };
                using var python = Process.Start(start)!;
                string json = python.StandardOutput.ReadToEnd();
                python.WaitForExit();
                Assert.True(python.ExitCode == 0, $"python3 failed (test.sh installs python3-numpy): {python.StandardError.ReadToEnd()}");
                using var document = JsonDocument.Parse(json);
                foreach (var (name, value) in expected)
                {
                    var entry = document.RootElement.GetProperty(name);
                    Assert.Equal("F64", entry.GetProperty("dtype").GetString());
                    Assert.Equal(value.shape, entry.GetProperty("shape").EnumerateArray().Select(s => s.GetInt64()).ToArray());
                    var values = entry.GetProperty("values").EnumerateArray().Select(v => v.GetDouble()).ToArray();
                    Assert.Equal(value.detach().flatten().data<double>().ToArray(), values);
                }
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Save at SP 4, resume at SP 2: the continuation is the uninterrupted SP 2 run. With documents joined the two agree
    /// to 1e-12; with packed documents kept apart to 1e-10 only (measured 1.3e-11 on the embedding): SP 4 and SP 2 add
    /// the per-document terms in different orders, and AdamW's m / (sqrt(v) + eps) magnifies that rounding in the
    /// entries whose gradient is near eps.
    /// </summary>
    [Theory]
    [InlineData(false, 1e-12)]
    [InlineData(true, Compare.Float64Tolerance)]
    public void SavedAtSp4ResumedAtSp2ContinuesTheUninterruptedRun(bool separateDocuments, double tolerance)
    {
        var config = Config with { SeparateDocuments = separateDocuments };
        const int total = 4, saveAt = 2;
        var directory = Directory.CreateTempSubdirectory("lasp2-resume-").FullName;
        try
        {
            double[] Run(int sp, int from, int to, string? load, string? save) => ProcessGroups.RunInProcess(sp, group =>
            {
                using var trainer = new Trainer(config, Options, group, sp);
                if (load is not null) Checkpoint.Load(load, trainer);
                Assert.Equal(from, trainer.Step);
                var losses = new List<double>();
                for (int s = from; s < to; s++)
                {
                    using var batch = Corpus.Get(s);
                    losses.Add(trainer.TrainStep(batch).Loss);
                }
                if (save is not null && group.Rank == 0) Checkpoint.Save(save, trainer);
                group.Barrier();
                return losses.ToArray();
            }, threadsPerRank: 1)[0];

            var uninterrupted = Run(2, 0, total, null, Path.Combine(directory, "uninterrupted"));
            var first = Run(4, 0, saveAt, null, Path.Combine(directory, "first"));
            var resumed = Run(2, saveAt, total, Path.Combine(directory, "first"), Path.Combine(directory, "resumed"));
            var losses = first.Concat(resumed).ToArray();
            for (int s = 0; s < total; s++)
                Assert.True(Math.Abs(losses[s] - uninterrupted[s]) <= tolerance * Math.Abs(uninterrupted[s]), $"step {s}: {losses[s]:R} vs {uninterrupted[s]:R}");
            var (expected, _) = Safetensors.Load(Path.Combine(directory, "uninterrupted", "model.safetensors"));
            var (actual, _) = Safetensors.Load(Path.Combine(directory, "resumed", "model.safetensors"));
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            foreach (var name in expected.Keys) AssertClose.Tensors(name, expected[name], actual[name], tolerance);
            Assert.Equal(config, Checkpoint.ReadConfig(Path.Combine(directory, "resumed")));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void ACheckpointOfAnotherShapeIsRefused()
    {
        var directory = Directory.CreateTempSubdirectory("lasp2-shape-").FullName;
        try
        {
            using (var small = new Trainer(Config, Options, null)) Checkpoint.Save(directory, small);
            using var wide = new Trainer(Config with { MlpDim = 32 }, Options, null);
            var error = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(directory, wide));
            Assert.Contains("layers.0.mlp.gate.weight", error.Message);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Debian's python3 (with Debian's python3-numpy, installed by test.sh), not whatever python3 comes first on PATH.</summary>
    static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    internal static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lasp2.sln"))) return dir.FullName;
        throw new InvalidOperationException($"Lasp2.sln not found above {AppContext.BaseDirectory}.");
    }
}
