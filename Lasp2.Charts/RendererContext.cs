using System.Reflection;
using System.Runtime.Loader;

namespace Lasp2.Charts;

/// <summary>
/// Loads the Plotly.NET renderer (Lasp2.Charts.Plotly with Plotly.NET, FSharp.Core 10.1, ...) from the
/// resources embedded in this assembly into an AssemblyLoadContext of its own.
/// Why: dotnet-interactive and dotnet-repl bundle FSharp.Core 10.0 in their default context, and
/// Plotly.NET 6.0.0 needs 10.1; one context cannot hold both. Only strings cross the boundary.
/// Framework assemblies (System.*) are not embedded and resolve from the default context.
/// </summary>
sealed class RendererContext : AssemblyLoadContext
{
    const string Prefix = "renderer/";
    static readonly Lazy<RendererContext> Instance = new(() => new RendererContext());
    readonly Assembly renderer;

    RendererContext() : base("Lasp2.Charts.Plotly", isCollectible: false) =>
        renderer = LoadFromAssemblyName(new AssemblyName("Lasp2.Charts.Plotly"));

    protected override Assembly? Load(AssemblyName assemblyName)
    {
        using var stream = typeof(RendererContext).Assembly.GetManifestResourceStream(Prefix + assemblyName.Name + ".dll");
        return stream is null ? null : LoadFromStream(stream);
    }

    /// <summary>Calls the static method <paramref name="method"/> of PlotlyRenderer with string arguments.</summary>
    public static string Call(string method, params string[] arguments)
    {
        var type = Instance.Value.renderer.GetType("Lasp2.Charts.Plotly.PlotlyRenderer", throwOnError: true)!;
        var entry = type.GetMethod(method, BindingFlags.Public | BindingFlags.Static)
                    ?? throw new MissingMethodException(type.FullName, method);
        try
        {
            return (string)entry.Invoke(null, arguments)!;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }
}
