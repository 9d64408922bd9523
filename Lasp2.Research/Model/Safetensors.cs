using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Model;

/// <summary>
/// The safetensors format (what PyTorch and Hugging Face load), written by hand because it is this short:
/// an 8-byte little-endian header length L, a UTF-8 JSON header of L bytes (per tensor: dtype, shape and
/// data_offsets [begin, end) relative to the end of the header; optional "__metadata__" of strings), padded with
/// spaces to a multiple of 8, then the raw little-endian data of the tensors back to back, C order.
/// </summary>
public static class Safetensors
{
    static readonly Dictionary<ScalarType, string> Names = new()
    {
        [ScalarType.Float64] = "F64", [ScalarType.Float32] = "F32", [ScalarType.Int64] = "I64",
    };

    /// <summary>Writes <paramref name="tensors"/> (float64, float32 or int64; any device) with <paramref name="metadata"/> to <paramref name="path"/>.</summary>
    public static void Save(string path, IReadOnlyList<(string Name, Tensor Value)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is not.");
        var header = new JsonObject();
        if (metadata is not null) header["__metadata__"] = new JsonObject(metadata.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value)));
        long offset = 0;
        foreach (var (name, value) in tensors)
        {
            if (!Names.TryGetValue(value.dtype, out var dtype))
                throw new ArgumentException($"{name}: dtype {value.dtype} is not supported; use float64, float32 or int64.", nameof(tensors));
            long bytes = value.numel() * value.element_size();
            header[name] = new JsonObject { ["dtype"] = dtype, ["shape"] = new JsonArray(value.shape.Select(s => (JsonNode?)s).ToArray()),
                                            ["data_offsets"] = new JsonArray(offset, offset + bytes) };
            offset += bytes;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var file = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        file.Write(length);
        file.Write(json);
        for (int i = json.Length; i < padded; i++) file.WriteByte((byte)' ');
        foreach (var (_, value) in tensors)
        {
            using var cpu = value.detach().cpu().contiguous();
            file.Write(cpu.bytes);
        }
    }

    /// <summary>Every tensor of <paramref name="path"/> by name (CPU, owned by the caller) and the metadata.</summary>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Load(string path)
    {
        var data = File.ReadAllBytes(path);
        if (data.Length < 8) throw new InvalidDataException($"{path}: too short for a safetensors file.");
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(data);
        if (headerLength > data.Length - 8) throw new InvalidDataException($"{path}: header length {headerLength} exceeds the file.");
        var header = JsonNode.Parse(Encoding.UTF8.GetString(data, 8, (int)headerLength))!.AsObject();
        var tensors = new Dictionary<string, Tensor>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                foreach (var (key, value) in node!.AsObject()) metadata[key] = value!.GetValue<string>();
                continue;
            }
            var dtype = Names.FirstOrDefault(p => p.Value == node!["dtype"]!.GetValue<string>());
            if (dtype.Value is null) throw new InvalidDataException($"{path}: {name} has unsupported dtype {node!["dtype"]}.");
            var shape = node!["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
            var offsets = node["data_offsets"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
            var tensor = empty(shape, dtype.Key);
            long bytes = tensor.numel() * tensor.element_size();
            if (offsets[1] - offsets[0] != bytes || 8 + headerLength + offsets[1] > data.Length)
                throw new InvalidDataException($"{path}: {name} has data_offsets [{offsets[0]}, {offsets[1]}) for {bytes} bytes.");
            data.AsSpan((int)(8 + headerLength + offsets[0]), (int)bytes).CopyTo(tensor.bytes);
            tensors[name] = tensor;
        }
        return (tensors, metadata);
    }
}
