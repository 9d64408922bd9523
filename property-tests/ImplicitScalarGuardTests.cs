using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using System.Reflection.PortableExecutable;
using Xunit;

namespace Lasp2.PropertyTests;

/// <summary>
/// No code of Lasp2.Reference, Lasp2.Research or the CLI makes a TorchSharp Scalar that the garbage collector may
/// free while libtorch reads it (see <c>Lasp2.Reference.Scalars</c>). Read from the compiled IL, so it
/// sees types, not spelling: a call site fails when it converts a C# number to Scalar implicitly, or calls
/// a TorchSharp method whose body (followed through TorchSharp's own calls) does, e.g. <c>t * 0.5</c>,
/// <c>a + b</c> (alpha = 1) or <c>masked_fill(mask, 0.0)</c>. Explicit Scalars are made only in Scalars;
/// the message names the helper to use instead.
/// </summary>
public class ImplicitScalarGuardTests
{
    [Fact]
    public void NoCallSiteMakesAScalarThatCanBeFreedWhileInUse()
    {
        var torchSharp = new Il(typeof(TorchSharp.torch).Assembly.Location);
        var offenders = new List<string>();
        int calls = 0;
        foreach (var assembly in new[] { typeof(Lasp2.Reference.Guards).Assembly, typeof(Lasp2.Research.Comm.IProcessGroup).Assembly, typeof(Lasp2.Cli.Lasp2App).Assembly })
        {
            var il = new Il(assembly.Location);
            foreach (var (method, callee) in il.Calls())
            {
                calls++;
                var (type, name) = il.Describe(callee);
                if (!type.StartsWith("TorchSharp.")) continue;
                bool explicitHome = method.StartsWith("Lasp2.Reference.Scalars.") && name == "ToScalar";
                if (!explicitHome && (IsScalarMaker(type, name) || torchSharp.MakesScalars(type, name, il.Signature(callee))))
                    offenders.Add($"{method} calls {type}.{name}: use Lasp2.Reference.Scalars, {Helper(name)}");
            }
        }
        Assert.True(calls > 1000, $"only {calls} call sites read: the scan is not reading the assemblies");
        Assert.True(offenders.Count == 0, $"{offenders.Count} call sites make implicit Scalars that a collection can free while libtorch reads them:\n"
            + string.Join("\n", offenders.Distinct().Order()));
    }

    /// <summary>The Lasp2.Reference.Scalars helper that replaces a TorchSharp call which makes a Scalar implicitly.</summary>
    static string Helper(string name) => name switch
    {
        "op_Addition" or "add" => "a.Plus(b) or x.Plus(value)",
        "add_" => "a.PlusInPlace(b)",
        "op_Subtraction" or "sub" or "rsub" => "Scalars.Minus(value, x) (tensor - tensor makes no Scalar)",
        "op_Multiply" or "mul" => "x.Times(factor)",
        "op_Division" or "div" => "x.Over(divisor)",
        "div_" => "x.OverInPlace(divisor)",
        "masked_fill" => "x.MaskedFill(mask, value)",
        "clamp_min" => "x.AtLeast(min)",
        "ge" or "op_GreaterThanOrEqual" => "x.IsAtLeast(value)",
        "arange" => "Scalars.Range(start, stop, dtype, device)",
        "fill_" => "x.Fill(value)",
        "elu" => "x.Elu()",
        "square" => "x * x",
        _ => "a Scalars helper with a using Scalar (add one beside the others)",
    };

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
