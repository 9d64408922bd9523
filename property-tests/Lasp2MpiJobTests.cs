using System.Text;
using System.Text.RegularExpressions;
using Lasp2.Reference;
using Xunit;
using static TorchSharp.torch;

namespace Lasp2.PropertyTests;

/// <summary>
/// LASP-2 as a real 4-rank Open MPI job (part of <see cref="MpiJobTests"/>, so the jobs run one after another):
/// `lasp2 launch -n 4 -- verify --method lasp2 --backend mpi` passes on every rank; its --dump files, read back
/// here as .npy, equal the quadratic reference computed in this process (float64, 1e-10); and a bad sequence
/// length fails the whole job.
/// </summary>
public partial class MpiJobTests
{
    [Fact]
    public void Lasp2AtFourMpiRanksEqualsTheReferenceAndDumpsNpy()
    {
        string dump = Directory.CreateTempSubdirectory("lasp2-mpi-").FullName;
        try
        {
            var job = Launch(4, ["verify", "--method", "lasp2", "--backend", "mpi", "--mask", "causal", "--dump", dump]);
            Assert.True(job.ExitCode == 0, $"exit code {job.ExitCode}:\n{job.Output}");
            Assert.Matches(new Regex(@"all \d+ checks passed"), job.Output);
            Assert.Contains("MPI, 4 ranks", job.Output);
            var folders = Directory.GetDirectories(dump);
            Assert.Equal(4, folders.Length);                                  // contiguous and zigzag, decay 0.9 and 1
            foreach (var folder in folders)
            {
                using var scope = NewDisposeScope();
                Tensor Load(string name) => ReadNpy(Path.Combine(folder, name + ".npy"));
                var (q, k, v, dO) = (Load("q"), Load("k"), Load("v"), Load("dO"));
                var decay = File.Exists(Path.Combine(folder, "decay.npy")) ? Load("decay").data<double>().ToArray() : null;
                var (o, grads) = Autograd.ForwardBackward(x => LinearAttention.Quadratic(x[0], x[1], x[2], true, decay), dO, q, k, v);
                AssertClose.Tensors($"O ({folder})", o, Load("o"), Compare.Float64Tolerance);
                AssertClose.Tensors($"dQ ({folder})", grads[0], Load("dq"), Compare.Float64Tolerance);
                AssertClose.Tensors($"dK ({folder})", grads[1], Load("dk"), Compare.Float64Tolerance);
                AssertClose.Tensors($"dV ({folder})", grads[2], Load("dv"), Compare.Float64Tolerance);
            }
        }
        finally
        {
            Directory.Delete(dump, recursive: true);
        }
        var bad = Launch(4, ["verify", "--method", "lasp2", "--backend", "mpi", "--seq", "97"]);
        Assert.True(bad.ExitCode != 0, $"N = 97 on 4 ranks must fail the job:\n{bad.Output}");
        Assert.Contains("not divisible by worldSize = 4", bad.Output);
    }

    /// <summary>Reads a float64 C-order .npy file (format 1.0) as written by Lasp2.Research.Verification.Npy.</summary>
    static Tensor ReadNpy(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal("\x93NUMPY", Encoding.Latin1.GetString(bytes, 0, 6));
        Assert.Equal((byte)1, bytes[6]);
        int headerLength = BitConverter.ToUInt16(bytes, 8);
        Assert.Equal(0, (10 + headerLength) % 64);
        string header = Encoding.ASCII.GetString(bytes, 10, headerLength);
        Assert.Contains("'descr': '<f8'", header);
        Assert.Contains("'fortran_order': False", header);
        var shape = Regex.Match(header, @"'shape': \(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        var data = new double[(bytes.Length - 10 - headerLength) / sizeof(double)];
        Buffer.BlockCopy(bytes, 10 + headerLength, data, 0, data.Length * sizeof(double));
        Assert.Equal(shape.Aggregate(1L, (a, b) => a * b), data.LongLength);
        return tensor(data, dtype: float64).reshape(shape);
    }
}
