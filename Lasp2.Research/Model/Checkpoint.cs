using System.Globalization;
using System.Text.Json;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// A training checkpoint, a folder: model.safetensors (the parameters by name, [out, in] for linear weights),
/// optimizer.safetensors (AdamW's m and v as exp_avg.NAME and exp_avg_sq.NAME, the step in its metadata) and
/// config.json (the model). Parameters are the same on every rank, so rank 0 writes and any number of ranks can
/// resume: the checkpoint does not depend on the sequence- or data-parallel sizes.
/// </summary>
public static class Checkpoint
{
    const string ModelFile = "model.safetensors", OptimizerFile = "optimizer.safetensors", ConfigFile = "config.json";

    /// <summary>Writes <paramref name="trainer"/>'s parameters, optimizer state and model config to <paramref name="directory"/>.</summary>
    public static void Save(string directory, Trainer trainer)
    {
        Directory.CreateDirectory(directory);
        var names = trainer.Parameters.Names;
        Safetensors.Save(Path.Combine(directory, ModelFile), trainer.Parameters.Entries,
                         new Dictionary<string, string> { ["format"] = "pt" });
        var moments = names.Select((n, i) => ("exp_avg." + n, trainer.Optimizer.First[i]))
                           .Concat(names.Select((n, i) => ("exp_avg_sq." + n, trainer.Optimizer.Second[i]))).ToList();
        Safetensors.Save(Path.Combine(directory, OptimizerFile), moments,
                         new Dictionary<string, string> { ["step"] = trainer.Step.ToString(CultureInfo.InvariantCulture) });
        File.WriteAllText(Path.Combine(directory, ConfigFile), JsonSerializer.Serialize(trainer.Model.Config, JsonOptions));
    }

    /// <summary>The model config stored in <paramref name="directory"/>.</summary>
    public static ModelConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"--resume {directory}: no {ConfigFile} (not a checkpoint folder).", path);
        return (JsonSerializer.Deserialize<ModelConfig>(File.ReadAllText(path), JsonOptions)
                ?? throw new InvalidDataException($"{path}: not a model config.")).Validate();
    }

    /// <summary>Loads parameters, optimizer moments and step from <paramref name="directory"/> into <paramref name="trainer"/> (shapes must match).</summary>
    public static void Load(string directory, Trainer trainer)
    {
        var (weights, _) = Safetensors.Load(Path.Combine(directory, ModelFile));
        var (moments, metadata) = Safetensors.Load(Path.Combine(directory, OptimizerFile));
        using var noGrad = no_grad();
        var names = trainer.Parameters.Names;
        void Copy(Dictionary<string, Tensor> source, string name, Tensor into)
        {
            if (!source.TryGetValue(name, out var value)) throw new InvalidDataException($"{directory}: the checkpoint has no '{name}'.");
            if (!value.shape.SequenceEqual(into.shape))
                throw new InvalidDataException($"{directory}: '{name}' is [{string.Join(", ", value.shape)}], the model expects [{string.Join(", ", into.shape)}].");
            into.copy_(value);
        }
        for (int i = 0; i < names.Count; i++)
        {
            Copy(weights, names[i], trainer.Parameters.Tensors[i]);
            Copy(moments, "exp_avg." + names[i], trainer.Optimizer.First[i]);
            Copy(moments, "exp_avg_sq." + names[i], trainer.Optimizer.Second[i]);
        }
        trainer.Optimizer.Steps = long.Parse(metadata["step"], CultureInfo.InvariantCulture);
        foreach (var t in weights.Values.Concat(moments.Values)) t.Dispose();
    }

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
    };
}
