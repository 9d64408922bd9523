using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Lasp2.Research.Verification;

/// <summary>
/// Writes tensors as NumPy .npy files (format version 1.0, C order, little-endian), so anyone can load
/// our inputs, outputs and gradients with numpy.load or torch.from_numpy. Hand-written: the format is a
/// 10-byte preamble, a Python-dict header padded to a multiple of 64 bytes, then the raw data
/// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html). bfloat16 has no NumPy dtype
/// and is written as float32.
/// </summary>
public static class Npy
{
    /// <summary>Writes <paramref name="tensor"/> to <paramref name="path"/> (any device; copied to CPU).</summary>
    public static void Write(string path, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        using var scope = NewDisposeScope();
        var data = tensor.dtype == ScalarType.BFloat16 ? tensor.to(float32) : tensor;
        data = data.detach().cpu().contiguous();
        string shape = data.dim() switch
        {
            0 => "()",
            1 => $"({data.shape[0]},)",
            _ => "(" + string.Join(", ", data.shape) + ")",
        };
        string header = $"{{'descr': '{Descriptor(data.dtype)}', 'fortran_order': False, 'shape': {shape}, }}";
        const int preamble = 10;                       // magic (6) + version (2) + header length (2)
        int padded = (preamble + header.Length + 1 + 63) / 64 * 64 - preamble;
        header = header.PadRight(padded - 1) + "\n";
        if (header.Length > ushort.MaxValue)
            throw new ArgumentException($"tensor rank {data.dim()} gives a header too long for .npy format 1.0.", nameof(tensor));
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException(".npy writing assumes a little-endian host.");

        using var stream = File.Create(path);
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        stream.Write(data.bytes);
    }

    static string Descriptor(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => "<f8",
        ScalarType.Float32 => "<f4",
        ScalarType.Float16 => "<f2",
        ScalarType.Int64 => "<i8",
        ScalarType.Int32 => "<i4",
        ScalarType.Int16 => "<i2",
        ScalarType.Int8 => "|i1",
        ScalarType.Byte => "|u1",
        ScalarType.Bool => "|b1",
        _ => throw new ArgumentException($"dtype {dtype} has no .npy descriptor here; convert to float32 or float64 first.", nameof(dtype)),
    };
}
