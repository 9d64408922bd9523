using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// No code of Lasp2.Reference or Lasp2.Research makes a TorchSharp Scalar that the garbage collector may
/// free while libtorch reads it (see <c>Lasp2.Reference.Scalars</c>). Read from the compiled IL, so it
/// sees types, not spelling: a call site fails when it converts a C# number to Scalar implicitly, or calls
/// a TorchSharp method whose body (followed through TorchSharp's own calls) does, e.g. <c>t * 0.5</c>,
/// <c>a + b</c> (alpha = 1) or <c>masked_fill(mask, 0.0)</c>. Explicit Scalars are made only in Scalars.
/// </summary>
public class ImplicitScalarGuardTests
{
    [Fact]
    public void NoCallSiteMakesAScalarThatCanBeFreedWhileInUse()
    {
        var torchSharp = new Il(typeof(TorchSharp.torch).Assembly.Location);
        var offenders = new List<string>();
        int calls = 0;
        foreach (var assembly in new[] { typeof(Lasp2.Reference.Guards).Assembly, typeof(Lasp2.Research.Comm.IProcessGroup).Assembly })
        {
            var il = new Il(assembly.Location);
            foreach (var (method, callee) in il.Calls())
            {
                calls++;
                var (type, name) = il.Describe(callee);
                if (!type.StartsWith("TorchSharp.")) continue;
                bool explicitHome = method.StartsWith("Lasp2.Reference.Scalars.") && name == "ToScalar";
                if (!explicitHome && (IsScalarMaker(type, name) || torchSharp.MakesScalars(type, name, il.Signature(callee))))
                    offenders.Add($"{method} calls {type}.{name}");
            }
        }
        Assert.True(calls > 1000, $"only {calls} call sites read: the scan is not reading the assemblies");
        var found = offenders.ToHashSet();
        var added = found.Except(NotYetConverted).Order().ToList();
        var converted = NotYetConverted.Except(found).Order().ToList();
        Assert.True(added.Count == 0, $"{added.Count} new call sites make implicit Scalars (use Lasp2.Reference.Scalars):\n" + string.Join("\n", added));
        Assert.True(converted.Count == 0, $"converted, remove from {nameof(NotYetConverted)}:\n" + string.Join("\n", converted));
    }

    /// <summary>
    /// Call sites still to be moved to Lasp2.Reference.Scalars (the softmax path is done). Most are a + b of two
    /// tensors, whose alpha = 1 TorchSharp makes implicitly inside Tensor.add. The list may only shrink.
    /// </summary>
    static readonly HashSet<string> NotYetConverted =
    [
        "Lasp2.Reference.FeatureMaps.Apply calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Reference.FeatureMaps.Apply calls TorchSharp.torch.nn.functional.elu",
        "Lasp2.Reference.LinearAttention.Chunked calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Reference.LinearAttention.Chunked calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Reference.LinearAttention.Chunked calls TorchSharp.torch.Tensor.op_Subtraction",
        "Lasp2.Reference.LinearAttention.Chunked calls TorchSharp.torch.arange",
        "Lasp2.Reference.LinearAttention.Recurrent calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.HybridStack.<>c__DisplayClass14_0.<InitLayers>g__Weight|0 calls TorchSharp.torch.Tensor.op_Division",
        "Lasp2.Research.Attention.HybridStack.Run calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.HybridStack.Run calls TorchSharp.torch.Tensor.square",
        "Lasp2.Research.Attention.Lasp1Ring.BackwardPass calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.Lasp1Ring.ForwardPass calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.Lasp2Attention.Lasp2Call.Fold calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.LeftProduct.Merge calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.OnlineSoftmax.Merge calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.Ring.VisitAccumulate calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Attention.RingAttention.<>c__DisplayClass15_0.<BackwardPass>b__0 calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.StatePrefix.Exclusive calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.StatePrefix.ExclusiveSuffix calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Bench.BenchRunner.<RunRank>g__Random|0_0 calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Research.Bench.KernelProfile.<>c__DisplayClass0_0.<Run>g__Random|0 calls TorchSharp.torch.Tensor.op_Division",
        "Lasp2.Research.Comm.CommLatency.FirstTouch calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Research.Comm.CommSelfTest.Checker.<>c__DisplayClass16_0.<Fold>b__1 calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Comm.InProcessGroup.Fold calls TorchSharp.torch.Tensor.add_",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.Backward calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.BlockSummaries calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.BlockSummaries calls TorchSharp.torch.Tensor.op_Subtraction",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.Forward calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateGradients calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateGradients calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateGradients calls TorchSharp.torch.Tensor.op_Subtraction",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateGradients calls TorchSharp.torch.arange",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateOutput calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.InitialStateOutput calls TorchSharp.torch.arange",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.Local calls TorchSharp.Scalar.op_Implicit",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.Local calls TorchSharp.torch.arange",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StateGradients calls TorchSharp.torch.Tensor.add_",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StateGradients calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StateGradients calls TorchSharp.torch.Tensor.op_Subtraction",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StateOutput calls TorchSharp.torch.Tensor.add_",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StateOutput calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Kernels.ChunkedLinearAttention.StatesSeen calls TorchSharp.torch.Tensor.op_Addition",
        "Lasp2.Research.Verification.LayerTiming.<Inputs>g__Random|2_0 calls TorchSharp.torch.Tensor.op_Multiply",
    ];

    /// <summary>Scalar.op_Implicit and ScalarExtensionMethods.ToScalar: the two ways to make a Scalar from a number.</summary>
    static bool IsScalarMaker(string type, string name) =>
        type == "TorchSharp.Scalar" && name == "op_Implicit" || type == "TorchSharp.ScalarExtensionMethods" && name == "ToScalar";

    /// <summary>Call sites in one assembly's IL, and (for TorchSharp) which of its methods make Scalars.</summary>
    sealed class Il
    {
        readonly PEReader pe;
        readonly MetadataReader md;
        readonly Dictionary<MethodDefinitionHandle, bool> makes = [];

        public Il(string path)
        {
            pe = new PEReader(File.OpenRead(path));
            md = pe.GetMetadataReader();
        }

        /// <summary>Every call/callvirt/newobj/ldftn of every method body: (Namespace.Type.Method, callee token).</summary>
        public IEnumerable<(string Method, EntityHandle Callee)> Calls()
        {
            foreach (var handle in md.MethodDefinitions)
            {
                var (type, name) = Describe(handle);
                foreach (var callee in CallsOf(handle)) yield return ($"{type}.{name}", callee);
            }
        }

        IEnumerable<EntityHandle> CallsOf(MethodDefinitionHandle handle)
        {
            var definition = md.GetMethodDefinition(handle);
            if (definition.RelativeVirtualAddress == 0) yield break;
            var reader = pe.GetMethodBody(definition.RelativeVirtualAddress).GetILReader();
            while (reader.RemainingBytes > 0)
            {
                int code = reader.ReadByte();
                if (code == 0xFE) code = 0xFE00 | reader.ReadByte();
                switch (code)
                {
                    case 0x28 or 0x6F or 0x73 or 0xFE06 or 0xFE07:                          // call callvirt newobj ldftn ldvirtftn
                        yield return MetadataTokens.EntityHandle(reader.ReadInt32());
                        break;
                    case 0x45:                                                              // switch
                        reader.Offset += 4 * reader.ReadInt32();
                        break;
                    default:
                        reader.Offset += OperandSize(code);
                        break;
                }
            }
        }

        /// <summary>Operand bytes of every IL opcode other than the calls and switch (ECMA-335 III).</summary>
        static int OperandSize(int code) => code switch
        {
            0x0E or 0x0F or 0x10 or 0x11 or 0x12 or 0x13 or 0x1F or (>= 0x2B and <= 0x37) or 0xDE => 1,
            0xFE09 or 0xFE0A or 0xFE0B or 0xFE0C or 0xFE0D or 0xFE0E or 0xFE12 or 0xFE19 => code == 0xFE12 || code == 0xFE19 ? 1 : 2,
            0x20 or 0x22 or (>= 0x38 and <= 0x44) or 0xDD or 0x27 or 0x29 or 0x70 or 0x71 or 0x72 or 0x74 or 0x75 or 0x79
                or (>= 0x7B and <= 0x81) or 0x8C or 0x8D or 0x8F or 0xA3 or 0xA4 or 0xA5 or 0xC2 or 0xC6 or 0xD0
                or 0xFE15 or 0xFE16 or 0xFE1C => 4,
            0x21 or 0x23 => 8,
            _ => 0,
        };

        public (string Type, string Name) Describe(EntityHandle handle)
        {
            switch (handle.Kind)
            {
                case HandleKind.MethodDefinition:
                    var definition = md.GetMethodDefinition((MethodDefinitionHandle)handle);
                    return (TypeName(definition.GetDeclaringType()), md.GetString(definition.Name));
                case HandleKind.MemberReference:
                    var reference = md.GetMemberReference((MemberReferenceHandle)handle);
                    return (TypeName(reference.Parent), md.GetString(reference.Name));
                case HandleKind.MethodSpecification:
                    return Describe(md.GetMethodSpecification((MethodSpecificationHandle)handle).Method);
                default:
                    return ("", "");
            }
        }

        /// <summary>The callee's signature blob as text of its bytes, resolved by type names (to match overloads across assemblies).</summary>
        public string Signature(EntityHandle handle) => handle.Kind switch
        {
            HandleKind.MemberReference => md.GetMemberReference((MemberReferenceHandle)handle).DecodeMethodSignature(new Names(), null).ToText(),
            HandleKind.MethodDefinition => md.GetMethodDefinition((MethodDefinitionHandle)handle).DecodeSignature(new Names(), null).ToText(),
            HandleKind.MethodSpecification => Signature(md.GetMethodSpecification((MethodSpecificationHandle)handle).Method),
            _ => "",
        };

        string TypeName(EntityHandle handle) => handle.Kind switch
        {
            HandleKind.TypeDefinition => Names.Of(md, (TypeDefinitionHandle)handle),
            HandleKind.TypeReference => Names.Of(md, (TypeReferenceHandle)handle),
            HandleKind.TypeSpecification => md.GetTypeSpecification((TypeSpecificationHandle)handle).DecodeSignature(new Names(), null),
            _ => "",
        };

        /// <summary>True when the TorchSharp method (type, name, signature) makes a Scalar, directly or through its own calls.</summary>
        public bool MakesScalars(string type, string name, string signature) =>
            md.MethodDefinitions.Where(h => Describe(h) == (type, name) && md.GetMethodDefinition(h).DecodeSignature(new Names(), null).ToText() == signature)
                .Any(h => Makes(h, 0));

        bool Makes(MethodDefinitionHandle handle, int depth)
        {
            if (makes.TryGetValue(handle, out bool known)) return known;
            if (depth > 8) return false;
            makes[handle] = false;                                                          // recursion guard
            bool result = false;
            foreach (var callee in CallsOf(handle))
            {
                var (type, name) = Describe(callee);
                if (IsScalarMaker(type, name)) { result = true; break; }
                if (callee.Kind == HandleKind.MethodDefinition && Makes((MethodDefinitionHandle)callee, depth + 1)) { result = true; break; }
            }
            return makes[handle] = result;
        }
    }

    /// <summary>Type names for signature decoding (namespace-qualified; enough to tell overloads apart).</summary>
    sealed class Names : ISignatureTypeProvider<string, object?>
    {
        public static string Of(MetadataReader md, TypeDefinitionHandle handle)
        {
            var t = md.GetTypeDefinition(handle);
            var declaring = t.GetDeclaringType();
            return declaring.IsNil ? $"{md.GetString(t.Namespace)}.{md.GetString(t.Name)}" : $"{Of(md, declaring)}.{md.GetString(t.Name)}";
        }

        public static string Of(MetadataReader md, TypeReferenceHandle handle)
        {
            var t = md.GetTypeReference(handle);
            return t.ResolutionScope.Kind == HandleKind.TypeReference
                ? $"{Of(md, (TypeReferenceHandle)t.ResolutionScope)}.{md.GetString(t.Name)}"
                : $"{md.GetString(t.Namespace)}.{md.GetString(t.Name)}";
        }

        public string GetPrimitiveType(PrimitiveTypeCode typeCode) => typeCode.ToString();
        public string GetTypeFromDefinition(MetadataReader reader, TypeDefinitionHandle handle, byte rawTypeKind) => Of(reader, handle);
        public string GetTypeFromReference(MetadataReader reader, TypeReferenceHandle handle, byte rawTypeKind) => Of(reader, handle);
        public string GetTypeFromSpecification(MetadataReader reader, object? context, TypeSpecificationHandle handle, byte rawTypeKind) =>
            reader.GetTypeSpecification(handle).DecodeSignature(this, context);
        public string GetSZArrayType(string elementType) => elementType + "[]";
        public string GetArrayType(string elementType, ArrayShape shape) => elementType + "[*]";
        public string GetByReferenceType(string elementType) => elementType + "&";
        public string GetPointerType(string elementType) => elementType + "*";
        public string GetPinnedType(string elementType) => elementType;
        public string GetGenericInstantiation(string genericType, System.Collections.Immutable.ImmutableArray<string> typeArguments) =>
            $"{genericType}<{string.Join(",", typeArguments)}>";
        public string GetGenericMethodParameter(object? context, int index) => $"!!{index}";
        public string GetGenericTypeParameter(object? context, int index) => $"!{index}";
        public string GetFunctionPointerType(MethodSignature<string> signature) => "fnptr";
        public string GetModifiedType(string modifier, string unmodifiedType, bool isRequired) => unmodifiedType;
        public string GetTypeFromSerializedName(string name) => name;
        public PrimitiveTypeCode GetUnderlyingEnumType(string type) => PrimitiveTypeCode.Int32;
        public bool IsSystemType(string type) => type == "System.Type";
    }
}

static class SignatureText
{
    public static string ToText(this MethodSignature<string> signature) =>
        $"{signature.ReturnType}({string.Join(",", signature.ParameterTypes)})";
}
