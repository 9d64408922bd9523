using Lasp2.Reference;
using static TorchSharp.torch;

namespace Lasp2.Research.Comm;

/// <summary>
/// Every collective of a group, checked on the calling rank against its sequential definition: what
/// `lasp2 comm-selftest` runs on each rank of an MPI job (and in-process). Rank r's input to a check is made
/// from (check number, r) alone, so each rank computes the expected result locally, without communication.
/// Sums are compared with a tolerance, because MPI may reduce in any order: float64 1e-12, float32 1e-6,
/// float16 2e-3, bfloat16 2e-2 (normwise relative error); everything else must match exactly.
/// </summary>
public static class CommSelfTest
{
    static readonly ScalarType[] Dtypes = [ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16];
    static readonly long[][] Shapes = [[3, 5], [7], [2, 3, 4], [0, 3]];

    /// <summary>Runs every check; returns one line per failed check (empty when all pass) and the number of checks.</summary>
    public static (IReadOnlyList<string> Failures, int Checks) Run(IProcessGroup group)
    {
        var run = new Checker(group);
        foreach (var dtype in Dtypes)
            foreach (var shape in Shapes)
                run.Collectives(dtype, shape);
        run.Layouts();
        run.SubGroups();
        run.Accounting();
        return (run.Failures, run.Checks);
    }

    sealed class Checker(IProcessGroup g)
    {
        readonly int w = g.WorldSize, rank = g.Rank;
        int next;

        public List<string> Failures { get; } = [];
        public int Checks { get; private set; }

        /// <summary>Rank r's input to check number <paramref name="check"/>.</summary>
        static Tensor Input(int check, int r, long[] shape, ScalarType dtype)
        {
            using var generator = new Generator((ulong)(check * 1009 + r));   // using: alive until randn returned (TorchSharp does not keep it alive across the call)
            return randn(shape, dtype: float64, generator: generator).to(dtype);
        }

        Tensor[] All(int check, long[] shape, ScalarType dtype) =>
            Enumerable.Range(0, w).Select(r => Input(check, r, shape, dtype)).ToArray();

        void Expect(string name, Tensor expected, Tensor actual, double tolerance = 0)
        {
            Checks++;
            string where = $"rank {rank}: {name} {expected.dtype} [{string.Join(",", expected.shape)}]";
            if (actual.dtype != expected.dtype || !actual.shape.SequenceEqual(expected.shape))
                Failures.Add($"{where}: got {actual.dtype} [{string.Join(",", actual.shape)}]");
            else if (expected.NumberOfElements > 0 && Compare.Errors(expected, actual) is var error && !error.Within(tolerance))
                Failures.Add($"{where}: relative error {error.MaxRel:0.0e+00} > {tolerance:0e+00}");
        }

        static double SumTolerance(ScalarType dtype) => dtype switch
        {
            ScalarType.Float64 => 1e-12,
            ScalarType.Float32 => 1e-6,
            ScalarType.Float16 => 2e-3,
            _ => 2e-2,
        };

        static Tensor Fold(IEnumerable<Tensor> terms, ReduceOp op) =>
            terms.Select(t => t.to(float64)).Aggregate((a, b) => op == ReduceOp.Sum ? a.Plus(b) : maximum(a, b));

        public void Collectives(ScalarType dtype, long[] shape)
        {
            using var scope = NewDisposeScope();
            double sum = SumTolerance(dtype);
            int c = next++;
            var inputs = All(c, shape, dtype);
            Expect("AllGather", stack(inputs), g.AllGather(inputs[rank]));
            var pending = g.AllGatherAsync(inputs[rank]);
            Expect("AllGatherAsync", stack(inputs), pending.Wait());
            foreach (var op in new[] { ReduceOp.Sum, ReduceOp.Max })
                Expect($"AllReduce {op}", Fold(inputs, op).to(dtype), g.AllReduce(inputs[rank], op), op == ReduceOp.Sum ? sum : 0);

            int b = next++;
            long[] blocked = [w, .. shape];
            var blocks = All(b, blocked, dtype);
            var scattered = Fold(blocks.Select(x => x[rank]), ReduceOp.Sum).to(dtype);
            Expect("ReduceScatter", scattered, g.ReduceScatter(blocks[rank]), sum);
            Expect("ReduceScatterAsync", scattered, g.ReduceScatterAsync(blocks[rank]).Wait(), sum);

            // AllToAll: W blocks along dimension 0, received blocks concatenated along the last dimension.
            int a = next++;
            long[] tall = [w * Math.Max(shape[0], 1), .. shape[1..]];
            var tallInputs = All(a, tall, dtype);
            int last = tall.Length - 1;
            Expect("AllToAll", cat(tallInputs.Select(x => x.chunk(w, 0)[rank]).ToArray(), last), g.AllToAll(tallInputs[rank], 0, last));

            for (int root = 0; root < w; root++)
                Expect($"Broadcast root {root}", inputs[root], g.Broadcast(inputs[rank], root));

            int to = (rank + 1) % w, from = (rank + w - 1) % w;
            Expect("SendRecv", inputs[from], g.SendRecv(inputs[rank], to, from));
            Expect("SendRecvAsync", inputs[from], g.SendRecvAsync(inputs[rank], to, from).Wait());
            Expect("SendRecv to itself", inputs[rank], g.SendRecv(inputs[rank], rank, rank));
            g.Send(inputs[rank], to);
            Expect("Send then Recv", inputs[from], g.Recv(shape, dtype, from));
            g.Barrier();
        }

        /// <summary>Non-contiguous inputs, views with an offset, and several async handles in flight waited in reverse.</summary>
        public void Layouts()
        {
            using var scope = NewDisposeScope();
            int c = next++;
            var inputs = All(c, [4, 6], ScalarType.Float32);
            Expect("AllGather of a transposed input", stack(inputs.Select(x => x.t()).ToArray()), g.AllGather(inputs[rank].t()));
            Expect("AllGather of a row view", stack(inputs.Select(x => x[2]).ToArray()), g.AllGather(inputs[rank][2]));
            Expect("AllToAll split 1 concat 0", cat(All(c, [3, 2 * w], ScalarType.Float64).Select(x => x.chunk(w, 1)[rank]).ToArray(), 0),
                g.AllToAll(Input(c, rank, [3, 2 * w], ScalarType.Float64), 1, 0));
            var gather = g.AllGatherAsync(inputs[rank]);
            var ring = g.SendRecvAsync(inputs[rank], (rank + 1) % w, (rank + w - 1) % w);
            var scatter = g.ReduceScatterAsync(stack(Enumerable.Repeat(inputs[rank], w).ToArray()));
            // Polling IsCompleted (which may complete the operation) before Wait must not change the result.
            while (!ring.IsCompleted) Thread.Yield();
            Expect("ReduceScatterAsync in flight", Fold(inputs, ReduceOp.Sum).to(float32), scatter.Wait(), 1e-6);
            Expect("SendRecvAsync in flight", inputs[(rank + w - 1) % w], ring.Wait());
            Expect("AllGatherAsync in flight", stack(inputs), gather.Wait());
        }

        /// <summary>Split into even and odd ranks, ordered by descending rank, and collectives inside.</summary>
        public void SubGroups()
        {
            using var scope = NewDisposeScope();
            int c = next++;
            using var sub = g.Split(rank % 2, -rank);
            var members = Enumerable.Range(0, w).Where(r => r % 2 == rank % 2).Reverse().ToArray();
            Checks++;
            if (sub.Rank != Array.IndexOf(members, rank) || sub.WorldSize != members.Length)
                Failures.Add($"rank {rank}: Split gave rank {sub.Rank} of {sub.WorldSize}; expected {Array.IndexOf(members, rank)} of {members.Length}");
            var inputs = All(c, [5], ScalarType.Float64);
            Expect("AllGather in sub-group", stack(members.Select(m => inputs[m]).ToArray()), sub.AllGather(inputs[rank]));
            Expect("AllReduce in sub-group", Fold(members.Select(m => inputs[m]), ReduceOp.Sum), sub.AllReduce(inputs[rank]), 1e-12);
        }

        /// <summary>A fresh group's stats after known calls equal the ring formulas (written out, as in the unit tests).</summary>
        public void Accounting()
        {
            using var scope = NewDisposeScope();
            using var fresh = g.Split(0, rank);
            fresh.AllGather(ones(3, 5));                                   // S = 60 bytes
            fresh.ReduceScatterAsync(ones(w, 3, 5)).Wait();                // W blocks of 60 bytes
            fresh.AllReduce(ones(7, dtype: ScalarType.Float64));           // B = 56 bytes
            fresh.SendRecv(ones(3, 5), (rank + 1) % w, (rank + w - 1) % w);
            (string Kind, long Sent, long Received)[] expected =
            [
                (CommKind.AllGather, (w - 1) * 60L, (w - 1) * 60L),
                (CommKind.ReduceScatter, (w - 1) * 60L, (w - 1) * 60L),
                (CommKind.AllReduce, 2L * (w - 1) * 56 / w, 2L * (w - 1) * 56 / w),
                (CommKind.SendRecv, w > 1 ? 60 : 0, w > 1 ? 60 : 0),
            ];
            foreach (var (kind, sent, received) in expected)
            {
                Checks++;
                var r = fresh.Stats[kind];
                if ((r.Calls, r.BytesSent, r.BytesReceived) != (1, sent, received))
                    Failures.Add($"rank {rank}: {kind} recorded calls {r.Calls}, sent {r.BytesSent}, received {r.BytesReceived}; " +
                                 $"expected 1, {sent}, {received}");
            }
        }
    }
}
