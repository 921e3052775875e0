using Microsoft.Extensions.Options;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Mvc.ApplicationParts;
using LlmServing.Producer.Application;
using LlmServing.Producer.Messaging;

namespace LlmServing.Producer.OperatorConsole;

/// <summary>
/// The operator's console at <c>/console</c>: Razor Pages rendered on the server (no script but the live refresh),
/// signed in with the admin key (every tenant) or a tenant's key (that tenant only).
/// </summary>
public static class ConsoleExtensions
{
    public static WebApplicationBuilder AddOperatorConsole(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<ConsoleOptions>().BindConfiguration(ConsoleOptions.Section);
        builder.Services.AddSingleton<ConsoleSession>();
        builder.Services.AddSingleton<ConsoleQueries>();
        builder.Services.AddSingleton<BrokerConsole>();
        builder.Services.AddSingleton<ReplayDeadLetter>();
        builder.Services.AddHttpClient(nameof(BrokerConsole));
        var assembly = typeof(ConsoleExtensions).Assembly;
        builder.Services.AddRazorPages(o =>
            {
                // Forms are protected by the SameSite=Strict session cookie and the same-origin check below, which
                // work across replicas without sharing a data-protection key ring.
                o.Conventions.ConfigureFilter(new IgnoreAntiforgeryTokenAttribute());
            })
            .ConfigureApplicationPartManager(parts =>
            {
                // The pages live in this assembly, which is not the entry assembly when a test or the monolith hosts it.
                if (!parts.ApplicationParts.Any(p => p is AssemblyPart a && a.Assembly == assembly))
                {
                    foreach (var part in ApplicationPartFactory.GetApplicationPartFactory(assembly).GetApplicationParts(assembly))
                    {
                        parts.ApplicationParts.Add(part);
                    }
                }
            });
        return builder;
    }

    public static WebApplication MapOperatorConsole(this WebApplication app)
    {
        app.UseWhen(c => c.Request.Path.StartsWithSegments("/console"), console => console.Use(async (context, next) =>
        {
            if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method)
                && !SameOrigin(context, context.RequestServices.GetRequiredService<IOptions<ConsoleOptions>>().Value.Hosts))
            {
                context.Response.StatusCode = StatusCodes.Status403Forbidden;
                await context.Response.WriteAsync("Cross-site request refused.");
                return;
            }

            context.Response.Headers.CacheControl = "no-store";
            context.Response.Headers.XFrameOptions = "DENY";
            context.Response.Headers["X-Content-Type-Options"] = "nosniff";
            context.Response.Headers["Referrer-Policy"] = "same-origin";
            var user = await context.RequestServices.GetRequiredService<ConsoleSession>().AuthenticateAsync(context);
            if (user is null && !context.Request.Path.StartsWithSegments("/console/login"))
            {
                var back = context.Request.Path + context.Request.QueryString;
                context.Response.Redirect("/console/login?return_to=" + Uri.EscapeDataString(back));
                return;
            }

            await next(context);
        }));
        app.MapRazorPages();
        return app;
    }

    /// <summary>
    /// A form post from the console's own pages: its Origin (or, without one, its Referer) is this host, and this host
    /// is one the console is known by (<see cref="ConsoleOptions.Hosts"/>, an IP literal or <c>localhost</c>), never
    /// just whatever the request's own Host header says.
    /// </summary>
    internal static bool SameOrigin(HttpContext context, IReadOnlyCollection<string> hosts)
    {
        var origin = context.Request.Headers.Origin.ToString();
        if (string.IsNullOrEmpty(origin) || origin == "null")
        {
            origin = context.Request.Headers.Referer.ToString();
        }

        return Uri.TryCreate(origin, UriKind.Absolute, out var uri)
               && string.Equals(uri.Authority, context.Request.Host.Value, StringComparison.OrdinalIgnoreCase)
               && string.Equals(uri.Scheme, context.Request.Scheme, StringComparison.OrdinalIgnoreCase)
               && KnownHost(uri, hosts);
    }

    private static bool KnownHost(Uri origin, IReadOnlyCollection<string> hosts) =>
        origin.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6
        || string.Equals(origin.Host, "localhost", StringComparison.OrdinalIgnoreCase)
        || hosts.Any(h => string.Equals(h, origin.Host, StringComparison.OrdinalIgnoreCase)
                          || string.Equals(h, origin.Authority, StringComparison.OrdinalIgnoreCase));
}
